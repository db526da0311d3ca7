"""R-CNN training targets: RPN anchor labels (`rpn_target_assign`) and RoI sampling
(`generate_proposal_labels`), with Paddle's rules, static shapes and explicit PRNG keys.

Both functions handle one image; vmap them over the batch with one key per image.
Their outputs are targets and carry no gradient.
Ground truth comes padded to a fixed count with a `gt_valid` mask, in the network
input's pixels (the resized image), like the anchors and proposals.

Random subsets are drawn by giving each candidate a uniform random priority and
keeping the top k, which picks a uniformly random k-subset as Paddle's reservoir
sampling does (Paddle's draws cannot be reproduced bit for bit). use_random=False
keeps the first k candidates in index order instead, which is exactly what Paddle
does with use_random=False.
"""
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from detx.ops.boxes import box_iou, encode_boxes

_EPS = 1e-5  # Paddle's tolerance when matching a box to the GT of its max IoU


def _priority(key, mask, use_random: bool):
  """Priority >= 0 for candidates (random, or by index), -1 for the others."""
  n = mask.shape[0]
  if use_random:
    u = jax.random.uniform(key, (n,))
  else:
    u = 1.0 - jnp.arange(n, dtype=jnp.float32) / n
  return jnp.where(mask, u, -1.0)


def _take_top(priority, k: int, count=None):
  """Mask of the (at most `count`) top-k entries that have priority >= 0."""
  n = priority.shape[0]
  k = min(k, n)
  vals, idx = lax.top_k(priority, k)
  ok = vals >= 0
  if count is not None:
    ok = ok & (jnp.arange(k) < count)
  return jnp.zeros((n,), bool).at[idx].set(ok)


def _split(key, use_random: bool):
  if not use_random:
    return None, None
  if key is None:
    raise ValueError('use_random=True needs a PRNG key')
  return jax.random.split(key)


def rpn_target_assign(anchors, gt_boxes, gt_valid, is_crowd, im_info, key,
                      batch_size_per_im: int = 256, fg_fraction: float = 0.5,
                      pos_thresh: float = 0.7, neg_thresh: float = 0.3,
                      straddle_thresh: float = 0.0, use_random: bool = True):
  """RPN labels and box targets for one image, as Paddle's `rpn_target_assign`.

  anchors [A, 4]; gt_boxes [G, 4] (input pixels), gt_valid [G] bool, is_crowd [G]
  bool; im_info [3] = (h, w, scale) of the input (only h, w are used: Paddle scales
  original-image GT by `scale` inside the op, ours are scaled already); key: PRNG key.

  - Anchors not inside the image by straddle_thresh (x1, y1 >= -t, x2 < w + t,
    y2 < h + t; none dropped when t < 0) are ignored; crowd GTs are dropped.
  - IoU with the +1 convention. Foreground candidates: IoU >= pos_thresh with some GT,
    or within 1e-5 of some GT's best IoU over the anchors (every GT keeps its best
    anchors; as in Paddle and Detectron, a GT that overlaps no inside anchor has best
    IoU 0 and so makes every anchor it misses a candidate). At most
    int(fg_fraction * batch_size_per_im) of them are sampled.
  - Background candidates: max IoU < neg_thresh (0 when there is no GT). Sampled up to
    batch_size_per_im minus the sampled foreground count. A sampled background anchor
    that was a sampled foreground becomes background, as in Paddle.

  Returns a dict of per-anchor arrays: labels [A] int32 (1 fg, 0 bg, -1 ignored),
  box_targets [A, 4] (encode_boxes(anchor, matched GT), variances 1, +1 convention;
  0 where not fg), box_weights [A] (1.0 on fg), matched_gt [A] int32 (the GT index
  where fg, else 0).
  """
  k_fg, k_bg = _split(key, use_random)
  anchors = anchors.astype(jnp.float32)
  gt_boxes = gt_boxes.astype(jnp.float32)
  im_h, im_w = im_info[0], im_info[1]
  if straddle_thresh >= 0:
    t = straddle_thresh
    inside = ((anchors[:, 0] >= -t) & (anchors[:, 1] >= -t) &
              (anchors[:, 2] < im_w + t) & (anchors[:, 3] < im_h + t))
  else:
    inside = jnp.ones(anchors.shape[:1], bool)
  gv = gt_valid.astype(bool) & ~is_crowd.astype(bool)
  pair = inside[:, None] & gv[None, :]
  iou = jnp.where(pair, box_iou(anchors, gt_boxes, legacy=True), -1.0)  # [A, G]
  anchor_max = jnp.max(iou, axis=1)
  argmax = jnp.argmax(iou, axis=1).astype(jnp.int32)
  gt_max = jnp.max(iou, axis=0)  # [G]
  is_best = jnp.any(pair & (jnp.abs(iou - gt_max[None, :]) < _EPS), axis=1)
  fg_cand = inside & (is_best | (anchor_max >= pos_thresh))
  bg_cand = inside & (anchor_max < neg_thresh)
  if fg_fraction > 0 and batch_size_per_im > 0:
    fg_sel = _take_top(_priority(k_fg, fg_cand, use_random), int(fg_fraction * batch_size_per_im))
    n_fg = jnp.sum(fg_sel)
    bg_sel = _take_top(_priority(k_bg, bg_cand, use_random), batch_size_per_im,
                       batch_size_per_im - n_fg)
  else:
    fg_sel, bg_sel = fg_cand, bg_cand
  labels = jnp.where(bg_sel, 0, jnp.where(fg_sel, 1, -1)).astype(jnp.int32)
  fg = labels == 1
  matched = jnp.where(fg[:, None], gt_boxes[argmax], anchors)
  targets = jnp.where(fg[:, None], encode_boxes(anchors, matched, legacy=True), 0.0)
  return lax.stop_gradient({
      'labels': labels,
      'box_targets': targets,
      'box_weights': fg.astype(jnp.float32),
      'matched_gt': jnp.where(fg, argmax, 0),
  })


def sample_rois(rois, rois_valid, gt_boxes, gt_classes, gt_valid, is_crowd, key,
                batch_size_per_im: int = 512, fg_fraction: float = 0.25,
                fg_thresh: float = 0.5, bg_thresh_hi: float = 0.5, bg_thresh_lo: float = 0.0,
                bbox_reg_weights: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
                class_agnostic: bool = False, is_cascade: bool = False, im_scale=1.0,
                use_random: bool = True, bg_sampling: str = 'paddle',
                num_samples: Optional[int] = None):
  """RoI sampling and box-head targets for one image, as Paddle's generate_proposal_labels.

  rois [R, 4] proposals (input pixels) with rois_valid [R]; gt_boxes [G, 4] (input
  pixels), gt_classes [G] int (1.. ; 0 is background), gt_valid [G], is_crowd [G];
  key: PRNG key. im_scale: the input / original scale (im_info[2]); Paddle computes
  IoUs and targets on original-image boxes, which the +1 convention makes
  scale-dependent, so boxes are divided by it first.

  Candidates are the GT boxes followed by the proposals (GT prepended). A candidate's
  max IoU runs over all valid GTs (0 when there is none); a crowd GT's own row gets -1,
  so it is never sampled. As in Paddle, a proposal may still match a crowd GT (Detectron
  would ignore it); PaddleDetection's COCO reader drops crowd boxes, so the zoo never
  sees one.
  - foreground: max IoU >= fg_thresh, matched to the first GT within 1e-5 of it;
  - background: bg_thresh_lo <= max IoU < bg_thresh_hi.
  Without is_cascade, up to floor(batch_size_per_im * fg_fraction) foreground RoIs are
  sampled uniformly, and up to batch_size_per_im minus that many background RoIs.
  bg_sampling='paddle' reproduces Paddle's background reservoir, which swaps only into
  the first (foreground count) slots: with f foreground and b background picks, the
  background candidates ranked f..b-1 in candidate order (GT, then proposals by
  score) are always kept and the other f are uniform over the rest. 'uniform' draws
  all b uniformly. With is_cascade (Cascade R-CNN stages >= 2) every foreground and
  background candidate is kept, and candidates with non-positive +1 width or height
  are skipped.

  num_samples: output slots; default batch_size_per_im, or G + R with is_cascade.
  Returns a dict, foreground first then background (each in candidate order), then
  padding:
    rois [S, 4] (input pixels), labels [S] int32 (GT class, 0 for background),
    box_targets [S, 4] (encode_boxes(roi, GT) / bbox_reg_weights, +1 convention;
    0 if not fg), box_class [S] int32 (the class slot of the box head to regress: the
    label, or 1 if class_agnostic; 0 if not fg), box_weights [S] (1.0 on fg),
    valid [S] bool, matched_gt [S] int32 (GT index on fg, else 0),
    max_overlap [S] (each RoI's max IoU, Paddle's MaxOverlapWithGT).
  """
  if bg_sampling not in ('paddle', 'uniform'):
    raise ValueError(f"bg_sampling must be 'paddle' or 'uniform', got {bg_sampling!r}")
  k_fg, k_bg = (None, None) if is_cascade else _split(key, use_random)
  g, r = gt_boxes.shape[0], rois.shape[0]
  c = g + r
  gt_valid = gt_valid.astype(bool)
  boxes = jnp.concatenate([gt_boxes, rois]).astype(jnp.float32)
  cand_valid = jnp.concatenate([gt_valid, rois_valid.astype(bool)])
  scale = jnp.asarray(im_scale, jnp.float32)
  boxes_o = boxes / scale
  gt_o = gt_boxes.astype(jnp.float32) / scale
  iou = jnp.where(gt_valid[None, :], box_iou(boxes_o, gt_o, legacy=True), -1.0)  # [C, G]
  max_ov = jnp.where(jnp.any(gt_valid), jnp.max(iou, axis=1), 0.0)
  crowd_row = jnp.concatenate([gt_valid & is_crowd.astype(bool), jnp.zeros((r,), bool)])
  max_ov = jnp.where(crowd_row, -1.0, max_ov)
  matched = jnp.argmax(gt_valid[None, :] & (max_ov[:, None] - iou < _EPS), axis=1)
  matched = matched.astype(jnp.int32)
  if is_cascade:
    cand_valid = (cand_valid & (boxes_o[:, 2] - boxes_o[:, 0] + 1 > 0) &
                  (boxes_o[:, 3] - boxes_o[:, 1] + 1 > 0))
  fg_cand = cand_valid & (max_ov >= fg_thresh)
  bg_cand = cand_valid & ~fg_cand & (max_ov >= bg_thresh_lo) & (max_ov < bg_thresh_hi)

  if is_cascade:
    fg_sel, bg_sel = fg_cand, bg_cand
    s = c if num_samples is None else num_samples
  else:
    fg_quota = int(math.floor(batch_size_per_im * fg_fraction))
    fg_sel = _take_top(_priority(k_fg, fg_cand, use_random), fg_quota)
    n_fg = jnp.sum(fg_sel)
    bg_quota = batch_size_per_im - n_fg
    pri = _priority(k_bg, bg_cand, use_random)
    if bg_sampling == 'paddle':
      rank = jnp.cumsum(bg_cand) - 1
      kept = jnp.minimum(bg_quota, jnp.sum(bg_cand))
      fixed = bg_cand & (rank >= n_fg) & (rank < kept)
      pri = jnp.where(fixed, 2.0, pri)
    bg_sel = _take_top(pri, batch_size_per_im, bg_quota)
    s = batch_size_per_im if num_samples is None else num_samples

  idx = jnp.arange(c)
  sort_key = jnp.where(fg_sel, idx, jnp.where(bg_sel, c + idx, 2 * c + idx))
  order = jnp.argsort(sort_key)[:s]
  is_fg = fg_sel[order]
  valid = is_fg | bg_sel[order]
  if order.shape[0] < s:
    pad = s - order.shape[0]
    order = jnp.pad(order, (0, pad))
    is_fg = jnp.pad(is_fg, (0, pad))
    valid = jnp.pad(valid, (0, pad))
  m = jnp.where(is_fg, matched[order], 0)
  labels = jnp.where(is_fg, gt_classes.astype(jnp.int32)[m], 0)
  ref = boxes_o[order]
  target_box = jnp.where(is_fg[:, None], gt_o[m], ref)
  targets = encode_boxes(ref, target_box, bbox_reg_weights, legacy=True)
  return lax.stop_gradient({
      'rois': jnp.where(valid[:, None], boxes[order], 0.0),
      'labels': labels,
      'box_targets': jnp.where(is_fg[:, None], targets, 0.0),
      'box_class': jnp.where(is_fg, 1 if class_agnostic else labels, 0).astype(jnp.int32),
      'box_weights': is_fg.astype(jnp.float32),
      'valid': valid,
      'matched_gt': m,
      'max_overlap': jnp.where(valid, max_ov[order], 0.0),
  })


def expand_box_targets(box_targets, box_class, num_classes: int):
  """Paddle's class-expanded layout: targets and weights [..., 4 * num_classes].

  box_targets [..., 4] and box_class [..., ] from `sample_rois`; the 4 entries of
  slot box_class get the targets and weight 1 (bbox inside = outside weights), all
  other entries 0; class 0 (background / not foreground) gets nothing.
  """
  one_hot = jax.nn.one_hot(box_class, num_classes, dtype=box_targets.dtype)
  one_hot = one_hot * (box_class > 0)[..., None].astype(box_targets.dtype)
  targets = one_hot[..., :, None] * box_targets[..., None, :]
  weights = jnp.broadcast_to(one_hot[..., :, None], targets.shape)
  shape = box_targets.shape[:-1] + (4 * num_classes,)
  return targets.reshape(shape), weights.reshape(shape)
