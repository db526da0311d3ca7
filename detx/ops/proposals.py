"""RPN proposals (Paddle's legacy `generate_proposals`) and FPN proposal collection.

Layout. Paddle's RPN head is NCHW: scores [N, A, H, W], deltas [N, 4A, H, W], and the
op transposes both to [N, H, W, C] before flattening, so candidate m = (h * W + w) * A
+ a, with delta k of anchor a in channel 4 * a + k. Our NHWC head outputs
scores [N, H, W, A] and deltas [N, H, W, 4A] are that transposed layout already:
Paddle's conv weights (channels unchanged) and `anchor_generator`'s [H * W * A, 4]
anchors line up without any permutation.

Counts vary per image, so every output is a fixed number of slots plus a mask.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from detx.ops.boxes import clip_boxes, decode_boxes
from detx.ops.nms import first_true, gather_valid, nms


def _min_size_keep(boxes, im_info, min_size: float):
  """Paddle's FilterBoxes(is_scale=True, pixel_offset=True) for one image.

  min_size is raised to 1 and compared with the size at the original scale,
  (x2 - x1) / im_scale + 1; the box centre (x1 + (x2 - x1 + 1) / 2) must also lie
  within im_info's (h, w).
  """
  im_h, im_w, im_scale = im_info[0], im_info[1], im_info[2]
  ms = max(float(min_size), 1.0)
  bw = boxes[:, 2] - boxes[:, 0]
  bh = boxes[:, 3] - boxes[:, 1]
  x_ctr = boxes[:, 0] + (bw + 1.0) / 2
  y_ctr = boxes[:, 1] + (bh + 1.0) / 2
  ws = bw / im_scale + 1.0
  hs = bh / im_scale + 1.0
  return (ws >= ms) & (hs >= ms) & (x_ctr <= im_w) & (y_ctr <= im_h)


def _variances(variances, num: int, dtype):
  var = jnp.asarray(variances, dtype)
  if var.ndim == 1:
    return jnp.broadcast_to(var, (num, 4))
  return var.reshape(num, 4)


def _candidates(scores, deltas, im_info, anchors, variances, pre_nms_top_n: int,
                min_size: float, k: int):
  """Top pre_nms_top_n anchors of one image and level, decoded, clipped and filtered.

  scores [H, W, A], deltas [H, W, 4A]. Returns boxes [k, 4], scores [k], keep [k]
  (k >= the candidate count; the extra slots are not kept).
  """
  s = scores.reshape(-1)
  d = deltas.reshape(-1, 4)
  m = s.shape[0]
  if d.shape[0] != m or anchors.shape[0] != m:
    raise ValueError(f'{m} scores, {d.shape[0]} deltas and {anchors.shape[0]} anchors')
  top = m if pre_nms_top_n <= 0 or pre_nms_top_n >= m else pre_nms_top_n
  top_s, idx = lax.top_k(s, top)
  var = _variances(variances, m, d.dtype)
  boxes = decode_boxes(anchors[idx], d[idx], var[idx], legacy=True)
  boxes = clip_boxes(boxes, im_info[:2], legacy=True)
  keep = _min_size_keep(boxes, im_info, min_size)
  pad = k - top
  if pad:
    boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
    top_s = jnp.pad(top_s, (0, pad))
    keep = jnp.pad(keep, (0, pad))
  return boxes, top_s, keep


def _select(boxes, scores, keep, post_nms_top_n: int, nms_thresh: float, eta: float = 1.0):
  """NMS over the kept candidates of one image and level; Paddle's empty-case fallback."""
  if nms_thresh > 0:
    masked = jnp.where(keep, scores, -jnp.inf)
    idx, ok = nms(boxes, masked, nms_thresh, post_nms_top_n, -jnp.inf, legacy=True, eta=eta)
  else:  # no NMS: the kept candidates in score order
    idx, ok = first_true(keep, post_nms_top_n)
  rois, out_scores = gather_valid(idx, ok, boxes, scores)
  # When no box survives the size filter Paddle emits one all-zero box with score 0.
  empty = ~jnp.any(keep)
  ok = ok.at[0].set(ok[0] | empty)
  return rois, out_scores, ok


def _check_eta(eta: float):
  if not 0.0 < eta <= 1.0:
    raise ValueError(f'eta must be in (0, 1], got {eta}')


def generate_proposals(scores, deltas, im_info, anchors, variances=(1.0, 1.0, 1.0, 1.0),
                       pre_nms_top_n: int = 6000, post_nms_top_n: int = 1000,
                       nms_thresh: float = 0.7, min_size: float = 0.0, eta: float = 1.0):
  """RPN proposals for one feature level, as Paddle's (legacy, im_info) generate_proposals.

  scores [N, H, W, A] (objectness probabilities), deltas [N, H, W, 4A] (see the
  module doc for the layout), im_info [N, 3] = (h, w, scale) of the network input,
  anchors [H * W * A, 4] from `anchor_generator`, variances a 4-vector or
  [H * W * A, 4].

  Per image: the pre_nms_top_n best scores (all when <= 0); deltas decoded on their
  anchors with the +1 convention and dw, dh clamped at log(1000/16); boxes clipped to
  [0, w - 1] x [0, h - 1]; boxes kept when (x2 - x1) / scale + 1 and the same for y
  are >= max(min_size, 1) and their centre lies in the image; greedy NMS (+1 IoU,
  threshold nms_thresh; none when <= 0); the best post_nms_top_n.
  Returns rois [N, post_nms_top_n, 4], scores [N, post_nms_top_n] (best first) and
  valid [N, post_nms_top_n]; invalid slots are 0. As in Paddle, an image where no box
  passes the size filter gets one valid all-zero box with score 0, and the outputs
  carry no gradient. eta < 1: Paddle's adaptive NMS (see `nms.greedy_keep`).
  """
  _check_eta(eta)
  m = anchors.shape[0]
  k = m if pre_nms_top_n <= 0 else min(pre_nms_top_n, m)

  def one(s, d, info):
    boxes, sc, keep = _candidates(s, d, info, anchors, variances, pre_nms_top_n, min_size, k)
    return _select(boxes, sc, keep, post_nms_top_n, nms_thresh, eta)

  return lax.stop_gradient(jax.vmap(one)(scores, deltas, im_info))


def generate_fpn_proposals(scores_per_level: Sequence, deltas_per_level: Sequence, im_info,
                           anchors_per_level: Sequence, variances=(1.0, 1.0, 1.0, 1.0),
                           pre_nms_top_n: int = 2000, post_nms_top_n: int = 2000,
                           nms_thresh: float = 0.7, min_size: float = 0.0, eta: float = 1.0):
  """`generate_proposals` on each FPN level, with one batched NMS over all levels.

  Same results as calling generate_proposals per level (PaddleDetection's FPN RPN),
  but the levels' greedy NMS loops run side by side (one vmapped loop over images and
  levels, instead of one loop per level). variances: a 4-vector, or one
  per-anchor array per level. Returns lists (one entry per level) of rois
  [N, post_nms_top_n, 4], scores [N, post_nms_top_n] and valid [N, post_nms_top_n],
  ready for `collect_fpn_proposals`.
  """
  _check_eta(eta)
  num = len(scores_per_level)
  if not (len(deltas_per_level) == len(anchors_per_level) == num):
    raise ValueError('scores, deltas and anchors need one entry per level')
  per_level = (isinstance(variances, (list, tuple)) and len(variances) == num and
               all(jnp.ndim(v) == 2 for v in variances))
  if not per_level:
    variances = [variances] * num
  ks = [a.shape[0] if pre_nms_top_n <= 0 else min(pre_nms_top_n, a.shape[0])
        for a in anchors_per_level]
  k = max(ks)
  cands = []
  for s, d, a, v in zip(scores_per_level, deltas_per_level, anchors_per_level, variances):
    fn = lambda s1, d1, info, a=a, v=v: _candidates(s1, d1, info, a, v, pre_nms_top_n,
                                                     min_size, k)
    cands.append(jax.vmap(fn)(s, d, im_info))
  boxes, scores, keep = (jnp.stack(x, axis=1) for x in zip(*cands))  # [N, L, k, ...]
  sel = lambda b, s, kp: _select(b, s, kp, post_nms_top_n, nms_thresh, eta)
  rois, out_scores, valid = lax.stop_gradient(jax.vmap(jax.vmap(sel))(boxes, scores, keep))
  return ([rois[:, i] for i in range(num)], [out_scores[:, i] for i in range(num)],
          [valid[:, i] for i in range(num)])


def collect_fpn_proposals(rois_per_level: Sequence, scores_per_level: Sequence,
                          valid_per_level: Sequence, post_nms_top_n: int):
  """Paddle's `collect_fpn_proposals`: the best post_nms_top_n over the whole batch.

  Inputs: one entry per level, rois [N, K_l, 4], scores [N, K_l], valid [N, K_l].
  As in Paddle (and unlike Detectron), the top-k is taken over all images of the
  batch together, so an image may keep more or fewer than post_nms_top_n / N.
  Ties go to the lower level, then the lower image, then the lower index.
  Returns per-image slots: rois [N, post_nms_top_n, 4], scores [N, post_nms_top_n]
  (best first) and valid [N, post_nms_top_n]; the valid slots of all images together
  are the batch-wide top-k.
  """
  num = len(rois_per_level)
  if not (len(scores_per_level) == len(valid_per_level) == num):
    raise ValueError('rois, scores and valid need one entry per level')
  masked = [jnp.where(v, s, -jnp.inf) for s, v in zip(scores_per_level, valid_per_level)]
  flat = jnp.concatenate([m.reshape(-1) for m in masked])  # (level, image, index) order
  total = flat.shape[0]
  top = min(post_nms_top_n, total)
  vals, idx = lax.top_k(flat, top)
  chosen = jnp.zeros((total,), bool).at[idx].set(vals > -jnp.inf)
  sizes = [m.size for m in masked]
  starts = [sum(sizes[:i]) for i in range(num)]
  chosen = jnp.concatenate([chosen[st:st + sz].reshape(m.shape)
                            for st, sz, m in zip(starts, sizes, masked)], axis=1)  # [N, K]
  scores = jnp.concatenate(masked, axis=1)
  rois = jnp.concatenate(list(rois_per_level), axis=1)
  per_image = jnp.where(chosen, scores, -jnp.inf)
  kk = min(post_nms_top_n, per_image.shape[1])
  _, order = lax.top_k(per_image, kk)  # [N, kk]
  ok = jnp.take_along_axis(chosen, order, axis=1)
  out_rois = jnp.where(ok[..., None], jnp.take_along_axis(rois, order[..., None], axis=1), 0.0)
  out_scores = jnp.where(ok, jnp.take_along_axis(scores, order, axis=1), 0.0)
  pad = post_nms_top_n - kk
  if pad:
    out_rois = jnp.pad(out_rois, ((0, 0), (0, pad), (0, 0)))
    out_scores = jnp.pad(out_scores, ((0, 0), (0, pad)))
    ok = jnp.pad(ok, ((0, 0), (0, pad)))
  return lax.stop_gradient((out_rois, out_scores, ok))
