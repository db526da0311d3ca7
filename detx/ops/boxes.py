"""Box geometry and R-CNN box coding on (x1, y1, x2, y2) boxes.

`legacy=True` selects PaddleDetection's pixel convention: a box covers the pixels
x1..x2 inclusive, so its width is x2 - x1 + 1.
"""
import math
from typing import Optional, Sequence, Union

import jax.numpy as jnp

DEFAULT_SCALE_CLIP = math.log(1000.0 / 16.0)

ArrayOrSeq = Union[jnp.ndarray, Sequence[float]]


def _offset(legacy: bool) -> float:
  return 1.0 if legacy else 0.0


def box_area(boxes, legacy: bool = False):
  """Area of [..., 4] xyxy boxes -> [...] (legacy: (w + 1) * (h + 1))."""
  off = _offset(legacy)
  return (boxes[..., 2] - boxes[..., 0] + off) * (boxes[..., 3] - boxes[..., 1] + off)


def box_iou(a, b, legacy: bool = False):
  """Pairwise IoU of a [..., N, 4] and b [..., M, 4] -> [..., N, M].

  legacy=True is Paddle's `BboxOverlaps` (R-CNN target assignment): widths
  x2 - x1 + 1 and intersection width max(x2' - x1' + 1, 0). Pairs with no
  intersection (or an empty union) get IoU 0.
  """
  off = _offset(legacy)
  a = a[..., :, None, :]
  b = b[..., None, :, :]
  iw = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]) + off, 0.0)
  ih = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]) + off, 0.0)
  inter = iw * ih
  union = box_area(a, legacy) + box_area(b, legacy) - inter
  ok = (inter > 0) & (union > 0)
  return jnp.where(ok, inter / jnp.where(ok, union, 1.0), 0.0)


def xyxy_to_cxcywh(boxes):
  """(x1, y1, x2, y2) -> (cx, cy, w, h), continuous convention (no +1)."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes):
  """(cx, cy, w, h) -> (x1, y1, x2, y2), continuous convention (no +1)."""
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def clip_boxes(boxes, hw, legacy: bool = True):
  """Clips [..., 4] boxes to an image of size hw = (h, w) (array [..., 2] or pair).

  legacy=True clips to [0, W - 1] x [0, H - 1]; otherwise to [0, W] x [0, H].
  """
  hw = jnp.asarray(hw, boxes.dtype)
  off = _offset(legacy)
  h = hw[..., 0:1] - off
  w = hw[..., 1:2] - off
  x = jnp.clip(boxes[..., 0::2], 0.0, w)
  y = jnp.clip(boxes[..., 1::2], 0.0, h)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def box_clip_size(im_info):
  """The (h, w) [..., 2] that Paddle's box_clip op clips to (then to h - 1, w - 1 with
  `clip_boxes(..., legacy=True)`) from im_info [..., 3] = (h, w, scale): round(h / scale),
  round(w / scale), rounding halves away from zero as C++ `round` does (Paddle's
  bbox_util.h ClipTiledBoxes with is_scale; box_clip_op.h calls it per image). With
  PaddleDetection's padded eval im_info this reaches past the original image by up to
  (stride - 1) / scale pixels."""
  info = jnp.asarray(im_info, jnp.float32)
  x = info[..., :2] / info[..., 2:3]
  f = jnp.floor(x)
  return jnp.where(x - f >= 0.5, f + 1.0, f)


def _centre_size(boxes, legacy: bool):
  off = _offset(legacy)
  w = boxes[..., 2] - boxes[..., 0] + off
  h = boxes[..., 3] - boxes[..., 1] + off
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(ref, target, variances: ArrayOrSeq = (1.0, 1.0, 1.0, 1.0),
                 legacy: bool = True, box_coder_centre: bool = False):
  """Regression deltas of `target` boxes relative to `ref` boxes, [..., 4] each.

  dx = (tcx - rcx) / rw / var[0], dw = log(tw / rw) / var[2] (same for y, h).
  `variances` is Paddle's prior_box_var: [0.1, 0.1, 0.2, 0.2] for the R-CNN box
  head (= Detectron weights 10, 10, 5, 5), ones for RPN. With legacy=True widths
  are x2 - x1 + 1 and centres x1 + w / 2, as in Paddle's `BoxToDelta` (used by
  rpn_target_assign and generate_proposal_labels). box_coder_centre=True takes the
  target centre as (x1 + x2) / 2, which is what the `box_coder` op's
  encode_center_size does (half a pixel off the prior's centre when legacy).
  """
  var = jnp.asarray(variances, ref.dtype)
  rcx, rcy, rw, rh = _centre_size(ref, legacy)
  tcx, tcy, tw, th = _centre_size(target, legacy)
  if box_coder_centre:
    tcx = (target[..., 0] + target[..., 2]) / 2
    tcy = (target[..., 1] + target[..., 3]) / 2
  deltas = jnp.stack([(tcx - rcx) / rw, (tcy - rcy) / rh,
                      jnp.log(tw / rw), jnp.log(th / rh)], axis=-1)
  return deltas / var


def decode_boxes(ref, deltas, variances: ArrayOrSeq = (1.0, 1.0, 1.0, 1.0),
                 legacy: bool = True, clip: Optional[float] = DEFAULT_SCALE_CLIP):
  """Inverse of `encode_boxes`: applies deltas [..., 4] to ref boxes [..., 4].

  Matches Paddle's box_coder decode_center_size (box_normalized = not legacy):
  x1 = cx - w / 2, x2 = cx + w / 2 - 1 when legacy. The scaled dw, dh (after
  multiplying by the variances) are clamped from above at `clip`, as in
  generate_proposals; clip=None disables that (the box_coder op does not clamp).
  """
  var = jnp.asarray(variances, deltas.dtype)
  d = deltas * var
  rcx, rcy, rw, rh = _centre_size(ref, legacy)
  dw, dh = d[..., 2], d[..., 3]
  if clip is not None:
    dw = jnp.minimum(dw, clip)
    dh = jnp.minimum(dh, clip)
  cx = d[..., 0] * rw + rcx
  cy = d[..., 1] * rh + rcy
  w = jnp.exp(dw) * rw
  h = jnp.exp(dh) * rh
  off = _offset(legacy)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2 - off, cy + h / 2 - off], axis=-1)
