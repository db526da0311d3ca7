"""Anchor boxes for the R-CNN RPN and RetinaNet, in Paddle's `anchor_generator` layout.

Anchors are a pure function of static shapes, so they are computed with numpy at
trace time and returned as constants. The arithmetic is done in float32 as in
Paddle's CPU kernel (with C's round-half-away-from-zero for the base sizes), so the
corners match Paddle's exactly.
"""
from typing import Sequence, Tuple, Union

import jax.numpy as jnp
import numpy as np

Pair = Union[float, Sequence[float]]


def _pair(v: Pair) -> Tuple[float, float]:
  if np.ndim(v) == 0:
    return float(v), float(v)
  v = [float(x) for x in v]
  if len(v) != 2:
    raise ValueError(f'expected a scalar or a pair, got {v}')
  return v[0], v[1]


def _round_half_away(x):
  return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def anchor_generator(feat_hw: Sequence[int], anchor_sizes: Sequence[float],
                     aspect_ratios: Sequence[float], stride: Pair, offset: float = 0.5,
                     dtype=jnp.float32):
  """Paddle's `anchor_generator` for a feature map of size feat_hw = (H, W).

  stride is a scalar or Paddle's (stride_w, stride_h) pair. For each location (row i,
  column j) the centre is (j * stride_w + offset * (stride_w - 1),
  i * stride_h + offset * (stride_h - 1)); for each aspect ratio ar (= h / w, outer
  loop) and each size (inner loop), base_w = round(sqrt(stride_w * stride_h / ar)),
  base_h = round(base_w * ar), and the anchor is base_w * size / stride_w wide and
  base_h * size / stride_h tall, with corners centre -/+ 0.5 * (size - 1) (the legacy
  +1 pixel convention).

  Returns [H * W * A, 4] (x1, y1, x2, y2), A = len(aspect_ratios) * len(anchor_sizes),
  ordered (row, column, ratio, size): index ((i * W + j) * A + r * len(sizes) + s).
  This is the order of Paddle's [H, W, A, 4] output flattened, and of an NHWC RPN
  head whose channel a (or 4 * a + k for deltas) holds anchor a, so Paddle's NCHW
  head weights keep their channel order.
  """
  h, w = (int(v) for v in feat_hw)
  sw, sh = (np.float32(v) for v in _pair(stride))
  f32 = np.float32
  whs = []
  for ar in aspect_ratios:
    ar = f32(ar)
    for size in anchor_sizes:
      size = f32(size)
      base_w = _round_half_away(np.sqrt(f32(sw * sh) / ar, dtype=f32))
      base_h = _round_half_away(f32(base_w * ar))
      whs.append((f32(size / sw) * base_w, f32(size / sh) * base_h))
  aw = np.array([v[0] for v in whs], np.float32)  # [A]
  ah = np.array([v[1] for v in whs], np.float32)
  off = f32(offset)
  cx = (np.arange(w, dtype=f32) * sw + off * (sw - f32(1)))  # [W]
  cy = (np.arange(h, dtype=f32) * sh + off * (sh - f32(1)))  # [H]
  # The corner arithmetic runs in double in Paddle (0.5 is a double literal).
  cx = cx.astype(np.float64)[None, :, None]
  cy = cy.astype(np.float64)[:, None, None]
  half_w = 0.5 * (aw.astype(np.float64) - 1.0)[None, None, :]
  half_h = 0.5 * (ah.astype(np.float64) - 1.0)[None, None, :]
  x1 = np.broadcast_to(cx - half_w, (h, w, len(whs)))
  y1 = np.broadcast_to(cy - half_h, (h, w, len(whs)))
  x2 = np.broadcast_to(cx + half_w, (h, w, len(whs)))
  y2 = np.broadcast_to(cy + half_h, (h, w, len(whs)))
  anchors = np.stack([x1, y1, x2, y2], -1).astype(np.float32).reshape(-1, 4)
  return jnp.asarray(anchors, dtype)


def retinanet_anchor_sizes(stride: float, octave_base_scale: float = 4.0,
                           scales_per_octave: int = 3) -> list:
  """RetinaNet anchor sizes of one level: stride * base * 2^(i / scales_per_octave)."""
  return [float(stride) * octave_base_scale * 2.0 ** (i / scales_per_octave)
          for i in range(scales_per_octave)]


def retinanet_anchors(feat_hw: Sequence[int], stride: float, octave_base_scale: float = 4.0,
                      scales_per_octave: int = 3,
                      aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5), dtype=jnp.float32):
  """PaddleDetection's RetinaNet anchors for one level (A = 9 with the defaults).

  anchor_generator with sizes `retinanet_anchor_sizes(stride)` and ratios in the order
  [1, 2, 0.5]: anchor a = ratio_index * scales_per_octave + scale_index.
  """
  sizes = retinanet_anchor_sizes(stride, octave_base_scale, scales_per_octave)
  return anchor_generator(feat_hw, sizes, aspect_ratios, stride, 0.5, dtype)
