"""Instance masks: training targets for RoIs (jnp, static shapes) and the test-time paste
into the original image (numpy / OpenCV / pycocotools), PADDLEDET_SPEC §2.4 and §5.

Ground truth masks come from the data pipeline as one M x M crop per GT box: pixel
(i, j) of GT g's crop samples the image at (y1 + (i + 0.5) h / M, x1 + (j + 0.5) w / M)
with w = max(x2 - x1, 1), h = max(y2 - y1, 1) of that GT box (Detectron's
polys_to_mask_wrt_box frame; detx/data/masks.py).

`mask_targets` resamples those crops into the frame of each RoI (Paddle's
generate_mask_labels rasterises the matched GT's polygons inside the RoI box; resampling
a crop is the static-shape equivalent, exact up to the crop's resolution): RoI pixel
(i, j) at (ry1 + (i + 0.5) rh / R, rx1 + (j + 0.5) rw / R), rw = max(rx2 - rx1, 1), read
bilinearly from the GT crop (0 outside it) and binarised at 0.5.

`paste_masks` is PaddleDetection's mask2out (Detectron's): each box is expanded about
its centre by (M + 2) / M, the M x M probability map is put in an (M + 2)^2 zero border,
cv2-resized to the integer expanded box, thresholded at > 0.5, pasted (clipped) into the
original image and RLE-encoded.
"""
from typing import Optional

import jax.numpy as jnp
import numpy as np


def _interp_matrix(coord, size: int):
  """Bilinear weights [..., n, size] of sample positions coord [..., n] on a grid of
  `size` pixels (pixel k at coordinate k); taps outside the grid are dropped (zero)."""
  lo = jnp.floor(coord)
  frac = coord - lo
  grid = jnp.arange(size, dtype=coord.dtype)
  lo = lo[..., None]
  return ((grid == lo) * (1.0 - frac)[..., None] + (grid == lo + 1.0) * frac[..., None])


def mask_targets(gt_masks, gt_boxes, rois, matched, resolution: int, threshold: float = 0.5):
  """Binary mask targets [..., R, res, res] (float32 0/1) for rois [..., R, 4].

  gt_masks [..., G, M, M] (uint8/bool/float crops, see the module doc), gt_boxes
  [..., G, 4] and rois in the same pixel frame, matched [..., R] the GT index of each
  RoI. Leading batch dims are shared by all inputs.
  """
  m = gt_masks.shape[-1]
  gb = jnp.take_along_axis(gt_boxes.astype(jnp.float32), matched[..., None], axis=-2)
  crops = jnp.take_along_axis(gt_masks, matched[..., None, None],
                              axis=-3).astype(jnp.float32)  # [..., R, M, M]
  rois = rois.astype(jnp.float32)
  t = (jnp.arange(resolution, dtype=jnp.float32) + 0.5) / resolution

  def axis(r0, r1, g0, g1):
    pos = r0[..., None] + t * jnp.maximum(r1 - r0, 1.0)[..., None]  # image coords
    gsize = jnp.maximum(g1 - g0, 1.0)[..., None]  # the crop frame's max(x2 - x1, 1)
    return _interp_matrix((pos - g0[..., None]) * m / gsize - 0.5, m)  # [..., R, res, M]

  wy = axis(rois[..., 1], rois[..., 3], gb[..., 1], gb[..., 3])
  wx = axis(rois[..., 0], rois[..., 2], gb[..., 0], gb[..., 2])
  out = jnp.einsum('...ik,...kl,...jl->...ij', wy, crops, wx,
                   precision='highest')
  return (out >= threshold).astype(jnp.float32)


def expand_boxes(boxes, scale: float):
  """Boxes [K, 4] scaled about their centres (Detectron's expand_boxes, no +1)."""
  boxes = np.asarray(boxes, np.float64)
  w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
  h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
  x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
  y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
  return np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def paste_mask(prob, box, orig_hw, threshold: float = 0.5) -> np.ndarray:
  """One M x M probability map and its box (original pixels) -> uint8 [H, W] mask."""
  import cv2
  prob = np.asarray(prob, np.float32)
  m = prob.shape[-1]
  im_h, im_w = int(orig_hw[0]), int(orig_hw[1])
  x0b, y0b, x1b, y1b = expand_boxes(np.asarray(box)[None], (m + 2.0) / m)[0].astype(np.int32)
  padded = np.zeros((m + 2, m + 2), np.float32)
  padded[1:-1, 1:-1] = prob
  w = max(int(x1b) - int(x0b) + 1, 1)
  h = max(int(y1b) - int(y0b) + 1, 1)
  resized = (cv2.resize(padded, (w, h)) > threshold).astype(np.uint8)
  out = np.zeros((im_h, im_w), np.uint8)
  x0, x1 = min(max(x0b, 0), im_w), min(max(x1b + 1, 0), im_w)
  y0, y1 = min(max(y0b, 0), im_h), min(max(y1b + 1, 0), im_h)
  if x1 > x0 and y1 > y0:
    out[y0:y1, x0:x1] = resized[y0 - y0b:y1 - y0b, x0 - x0b:x1 - x0b]
  return out


def paste_masks(probs, boxes, valid, orig_hw, threshold: float = 0.5) -> list[Optional[dict]]:
  """probs [K, M, M] (the predicted class's probabilities), boxes [K, 4] in original
  pixels (legacy xyxy), valid [K], orig_hw (h, w) -> list of K COCO RLE dicts
  ('counts' as str), None where not valid."""
  from pycocotools import mask as mask_utils
  probs, boxes, valid = np.asarray(probs), np.asarray(boxes), np.asarray(valid)
  out = []
  for k in range(probs.shape[0]):
    if not valid[k]:
      out.append(None)
      continue
    m = paste_mask(probs[k], boxes[k], orig_hw, threshold)
    rle = mask_utils.encode(np.asfortranarray(m[:, :, None]))[0]
    rle['counts'] = rle['counts'].decode('ascii')
    out.append(rle)
  return out
