"""RetinaNet ops with Paddle's semantics: `retinanet_target_assign` and
`retinanet_detection_output` (paddle/fluid/operators/detection/*, read for
PaddleDetection's RetinaHead; paddlepaddle 3.x no longer ships either; its
`sigmoid_focal_loss` is in detx.ops.losses).

Static shapes: target assignment returns per-anchor arrays (label -1 for ignored
anchors) where Paddle gathers variable-length index lists; detection output returns
`keep_top_k` slots with a validity mask. Boxes use the legacy +1 pixel convention.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from detx.ops.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes
from detx.ops.nms import keep_detections

_EPS = 1e-5  # Paddle's tolerance when matching an anchor to a GT's best IoU


def retinanet_target_assign(anchors, gt_boxes, gt_labels, gt_valid, is_crowd,
                            positive_overlap: float = 0.5, negative_overlap: float = 0.4):
  """Classification and box targets of every anchor of one image, as Paddle's
  `retinanet_target_assign`.

  anchors [A, 4]; gt_boxes [G, 4] in the anchors' (input) pixels; gt_labels [G] int
  (1..C; 0 is background); gt_valid [G] bool; is_crowd [G] bool (crowd GTs are dropped).
  Every anchor is considered (no straddle filter). IoU with the +1 convention.

  - Foreground candidates: IoU >= positive_overlap with some GT, or within 1e-5 of some
    GT's best IoU over all anchors (each GT's best anchors).
  - Background: max IoU < negative_overlap (every anchor when there is no GT). This is
    applied after the foreground rule and overrides it: a GT's best anchor is positive
    only when its IoU reaches negative_overlap (Paddle's kernel, like Detectron's).
  - The rest are ignored.

  Returns a dict: labels [A] int32 (the matched GT's label on foreground, 0 background,
  -1 ignored), box_targets [A, 4] (encode_boxes(anchor, GT), variances 1; 0 where not
  foreground), box_weights [A] (1.0 on foreground), matched_gt [A] int32 (GT index on
  foreground, else 0), fg_num int32 scalar = the number of foreground candidates
  *before* the background override, plus 1 (Paddle's ForegroundNumber: the loss
  normaliser).
  """
  anchors = anchors.astype(jnp.float32)
  gt_boxes = gt_boxes.astype(jnp.float32)
  gv = gt_valid.astype(bool) & ~is_crowd.astype(bool)
  iou = jnp.where(gv[None, :], box_iou(anchors, gt_boxes, legacy=True), -1.0)  # [A, G]
  anchor_max = jnp.max(iou, axis=1)
  argmax = jnp.argmax(iou, axis=1).astype(jnp.int32)  # first GT of the max, as Eigen's
  gt_max = jnp.max(iou, axis=0)
  is_best = jnp.any(gv[None, :] & (jnp.abs(iou - gt_max[None, :]) < _EPS), axis=1)
  fg_cand = is_best | (anchor_max >= positive_overlap)
  bg = anchor_max < negative_overlap
  fg = fg_cand & ~bg
  labels = jnp.where(fg, gt_labels.astype(jnp.int32)[argmax], jnp.where(bg, 0, -1))
  matched = jnp.where(fg[:, None], gt_boxes[argmax], anchors)
  targets = jnp.where(fg[:, None], encode_boxes(anchors, matched, legacy=True), 0.0)
  return lax.stop_gradient({
      'labels': labels.astype(jnp.int32),
      'box_targets': targets,
      'box_weights': fg.astype(jnp.float32),
      'matched_gt': jnp.where(fg, argmax, 0),
      'fg_num': jnp.sum(fg_cand).astype(jnp.int32) + 1,
  })


def _level_candidates(scores, deltas, anchors, threshold: float, top_k: int):
  """The best top_k (anchor, class) pairs of one level with score > threshold:
  (scores [k], classes [k], decoded boxes [k, 4], valid [k]), best first (ties: lower
  index first, as Paddle's stable sort)."""
  m, c = scores.shape
  flat = scores.reshape(-1)  # index anchor * C + class
  k = m * c if top_k < 0 else min(top_k, m * c)
  top, idx = lax.top_k(jnp.where(flat > threshold, flat, -jnp.inf), k)
  valid = top > threshold
  a = idx // c
  boxes = decode_boxes(anchors[a], deltas[a], legacy=True, clip=None)
  return jnp.where(valid, top, 0.0), (idx % c).astype(jnp.int32), boxes, valid


def retinanet_detection_output(scores: Sequence, deltas: Sequence, anchors: Sequence, im_info,
                               score_threshold: float = 0.05, nms_top_k: int = 1000,
                               keep_top_k: int = 100, nms_threshold: float = 0.5):
  """Paddle's `retinanet_detection_output` (nms_eta 1), batched.

  scores: per level [N, M_l, C] probabilities (sigmoid; no background column);
  deltas: per level [N, M_l, 4]; anchors: per level [M_l, 4] in input pixels;
  im_info [N, 3] = (h, w, scale) of the network input.

  Per image and level, the (anchor, class) pairs with score > score_threshold (> 0 on
  the last level, as Detectron) are sorted and the best nms_top_k kept; their boxes are
  decoded from the anchors (+1 convention, variances 1, no clamp on dw/dh), divided by
  the scale and clipped to [0, round(w / scale) - 1] x [0, round(h / scale) - 1]. Then
  per class greedy NMS at nms_threshold (+1 IoU) over all levels, and the best
  keep_top_k detections over classes. One class-aware greedy pass over the candidates
  sorted by score does both, which equals Paddle's per-class NMS up to the order of
  exactly tied scores.

  Returns {'boxes' [N, K, 4] (image pixels / scale), 'scores' [N, K], 'classes' [N, K]
  int32 (0..C-1), 'valid' [N, K]}, K = keep_top_k, best first, invalid slots zero.
  """
  last = len(scores) - 1

  def single(sc, dl, info):
    parts = [_level_candidates(s, d, a, score_threshold if l < last else 0.0, nms_top_k)
             for l, (s, d, a) in enumerate(zip(sc, dl, anchors))]
    s, c, b, v = (jnp.concatenate(x) for x in zip(*parts))
    scale = info[2]
    hw = jnp.floor(info[:2] / scale + 0.5)  # C round(), positive values
    b = clip_boxes(b / scale, hw, legacy=True)
    order = jnp.argsort(jnp.where(v, -s, jnp.inf), stable=True)
    s, c, b, v = s[order], c[order], b[order], v[order]
    return keep_detections(b, s, c, v, nms_threshold, True, keep_top_k)

  return jax.vmap(single)(list(scores), list(deltas), im_info.astype(jnp.float32))
