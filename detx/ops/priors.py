"""SSD prior boxes: Paddle 1.5's `prior_box` op and the per-layer loop of
`fluid.layers.multi_box_head`, as SSD MobileNet-V1 used them at PaddleDetection 597145c.

Priors are a pure function of static shapes: numpy at trace time, float32 as Paddle's
CPU kernel, returned as jnp constants. Boxes are normalised xyxy (divided by the
image's width and height).
"""
from typing import Sequence

import jax.numpy as jnp
import numpy as np

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)


def expand_aspect_ratios(aspect_ratios: Sequence[float], flip: bool) -> list[float]:
  """Paddle's ExpandAspectRatios: 1 first, then each new ratio (and 1/ratio when
  flip), ratios within 1e-6 of one already listed skipped."""
  out = [1.0]
  for ar in aspect_ratios:
    if any(abs(float(ar) - o) < 1e-6 for o in out):
      continue
    out.append(float(ar))
    if flip:
      out.append(1.0 / float(ar))
  return out


def prior_box(feat_hw: Sequence[int], image_hw: Sequence[int], min_sizes: Sequence[float],
              max_sizes: Sequence[float] = (), aspect_ratios: Sequence[float] = (),
              variances: Sequence[float] = SSD_VARIANCES, flip: bool = False,
              clip: bool = False, steps: Sequence[float] = (0.0, 0.0), offset: float = 0.5):
  """Paddle's prior_box (min_max_aspect_ratios_order=False) for one (H, W) feature map
  of an image (h, w). steps (step_w, step_h) = 0 take image / feature size.

  Per cell, for each min size: one box per expanded aspect ratio (w = s sqrt(ar),
  h = s / sqrt(ar)), then the square sqrt(min * max) box when max_sizes are given.
  Returns (boxes [H, W, P, 4], variances [H, W, P, 4]), normalised xyxy."""
  fh, fw = int(feat_hw[0]), int(feat_hw[1])
  ih, iw = np.float32(image_hw[0]), np.float32(image_hw[1])
  step_w, step_h = (np.float32(s) for s in steps)
  if step_w == 0 or step_h == 0:
    step_w, step_h = iw / np.float32(fw), ih / np.float32(fh)
  ratios = expand_aspect_ratios(aspect_ratios, flip)
  half_sizes = []  # (half width, half height) per prior, in Paddle's order
  for s, m in enumerate(min_sizes):
    for ar in ratios:
      r = np.sqrt(np.float32(ar))
      half_sizes.append((np.float32(m) * r / 2, np.float32(m) / r / 2))
    if len(max_sizes):
      side = np.sqrt(np.float32(m) * np.float32(max_sizes[s])) / 2
      half_sizes.append((side, side))
  half = np.asarray(half_sizes, np.float32)                         # [P, 2]
  cx = (np.arange(fw, dtype=np.float32) + np.float32(offset)) * step_w
  cy = (np.arange(fh, dtype=np.float32) + np.float32(offset)) * step_h
  cx = np.broadcast_to(cx[None, :, None], (fh, fw, len(half)))
  cy = np.broadcast_to(cy[:, None, None], (fh, fw, len(half)))
  boxes = np.stack([(cx - half[:, 0]) / iw, (cy - half[:, 1]) / ih,
                    (cx + half[:, 0]) / iw, (cy + half[:, 1]) / ih], -1).astype(np.float32)
  if clip:
    boxes = np.clip(boxes, 0.0, 1.0)
  var = np.broadcast_to(np.asarray(variances, np.float32), boxes.shape)
  return jnp.asarray(boxes), jnp.asarray(var)


def priors_per_cell(min_size_count: int, has_max: bool, aspect_ratios, flip: bool) -> int:
  """How many priors prior_box places at each cell (the head's anchors per cell)."""
  return min_size_count * len(expand_aspect_ratios(aspect_ratios, flip)) + \
      (min_size_count if has_max else 0)


def ssd_priors(feat_hws: Sequence[Sequence[int]], image_hw: Sequence[int],
               min_sizes: Sequence[float], max_sizes: Sequence[float],
               aspect_ratios: Sequence[Sequence[float]], flip: bool = True, clip: bool = False,
               offset: float = 0.5, variances: Sequence[float] = SSD_VARIANCES):
  """multi_box_head's priors over its layers, flattened and concatenated in the head's
  order: (boxes [P, 4], variances [P, 4]). Layer i uses min_sizes[i], max_sizes[i]
  (0 = none, Paddle's `[]`) and aspect_ratios[i]; steps are image / feature size."""
  boxes, var = [], []
  for i, hw in enumerate(feat_hws):
    maxes = (max_sizes[i],) if max_sizes[i] else ()
    b, v = prior_box(hw, image_hw, (min_sizes[i],), maxes, aspect_ratios[i], variances,
                     flip, clip, (0.0, 0.0), offset)
    boxes.append(b.reshape(-1, 4))
    var.append(v.reshape(-1, 4))
  return jnp.concatenate(boxes), jnp.concatenate(var)
