"""Instance masks: training targets for RoIs (jnp, static shapes) and the test-time paste
into the original image (numpy / OpenCV / pycocotools), PADDLEDET_SPEC §2.4 and §5.

Training targets are Paddle's generate_mask_labels (PaddlePaddle 1.5's C++ op, used by
ppdet at 597145c): each foreground RoI takes the non-crowd instance whose polygons' box
(Poly2Boxes) overlaps it most (legacy IoU, RoI / im_scale in original pixels), and that
instance's polygons are rasterised inside the RoI at M x M (Polys2MaskWrtBox): a vertex
(x, y) goes to ((x - x0) * M / w, (y - y0) * M / h) in float32 with w = max(x1 - x0, 1),
h = max(y1 - y0, 1), each polygon is rasterised by Poly2Mask (pycocotools' rleFrPoly:
vertices upsampled by 5 and rounded, the boundary walked edge by edge, one toggle per
crossing of a pixel column's centre line, toggles in a column switching the pixels below
them) and the polygons are OR-ed.

`polygon_mask_targets` does this on the device for every RoI at once. The batch carries
each instance's polygons as padded vertices (`gt_polys` [G, V, 2], original pixels, flipped
with the image; `gt_poly_ids` [G, V], the vertex's polygon, -1 for padding). Poly2Mask is
evaluated column by column instead of walking: for each edge and pixel column the
crossing's row follows from integer arithmetic (see `_edge_rows`), exact where Paddle's
double arithmetic is exact. The two differ only where the walk's double rounding falls on a
tie (the line passing exactly through a point's rounding boundary, which double rounding
can put on either side); tests/ops/test_masks.py measures that against pycocotools.

`paste_masks` is PaddleDetection's mask2out (Detectron's): each box is expanded about
its centre by (M + 2) / M, the M x M probability map is put in an (M + 2)^2 zero border,
cv2-resized to the integer expanded box, thresholded at > 0.5, pasted (clipped) into the
original image and RLE-encoded.
"""
from fractions import Fraction
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from detx.ops.boxes import box_iou


def _smallest_f32_at_least(q: Fraction) -> np.float32:
  v = np.float32(float(q))
  while Fraction(float(v)) < q:
    v = np.nextafter(v, np.float32(np.inf))
  while Fraction(float(np.nextafter(v, np.float32(-np.inf)))) >= q:
    v = np.nextafter(v, np.float32(-np.inf))
  return v


# f >= (2k - 1) / 10  <=>  floor(5 f + 0.5) >= k, for float32 f in [0, 1).
_FIFTH_STEPS = [_smallest_f32_at_least(Fraction(2 * k - 1, 10)) for k in range(1, 6)]


def _round5(p):
  """C's (int)(5.0 * p + 0.5) for float32 p (Poly2Mask's upsampling; 5.0 * p is exact in
  double): floor by comparing p's fraction with the float32 thresholds, then truncation
  toward zero for negative non-integers (5p + 0.5 is an integer only when the fraction
  is 0.5)."""
  i = jnp.floor(p)
  f = p - i  # exact for |p| < 2**23
  z = 5 * i.astype(jnp.int32) + sum((f >= c).astype(jnp.int32) for c in _FIFTH_STEPS)
  return z + ((z < 0) & (f != 0.5)).astype(jnp.int32)


def _floordiv(a, b, c, d):
  """floor((a * b + c) / d) for int32 a, b, c and d > 0, exact while the quotient stays
  below 2**22 even where a * b overflows int32: a float32 estimate, corrected twice by
  the remainder (int32 arithmetic wraps, so the small true remainder comes out exactly)."""
  f32 = jnp.float32
  est = jnp.floor((a.astype(f32) * b.astype(f32) + c.astype(f32)) / d.astype(f32))
  q = jnp.clip(est, -2.0 ** 23, 2.0 ** 23).astype(jnp.int32)
  for _ in range(2):
    r = a * b + c - q * d
    q = q + (r >= d).astype(jnp.int32) - (r < 0).astype(jnp.int32)
  return q


def _edge_rows(x0, y0, x1, y1, resolution: int):
  """Poly2Mask's toggles of the upsampled edges (x0, y0) -> (x1, y1) (int32 [...]) in
  each pixel column: (cross [..., M] bool, row [..., M] int32 in [0, M]).

  Column j's centre line lies between upsampled x = 5j + 2 and 5j + 3; the walk crosses
  it at most once per edge, and the toggle's row is ceil(clip((v + 0.5) / 5 - 0.5, 0, M))
  = clip(floor((v + 2) / 5), 0, M) with v the lower of the two points' y. Along x
  (dx >= dy) the points are (x, floor(ys + (x - xs) dy / dx + 1/2)); along y the points
  are (floor(xs + (y - ys) dx / dy + 1/2), y) and the crossing follows from the first y
  past the line. Negative coordinates use floor where C truncates: both give row 0 or a
  column left of the first.
  """
  c = 5 * jnp.arange(resolution, dtype=jnp.int32) + 2
  x0, y0, x1, y1 = (v[..., None] for v in (x0, y0, x1, y1))
  dx, dy = jnp.abs(x1 - x0), jnp.abs(y1 - y0)
  # Along x: from the left end.
  left = x0 <= x1
  xs, ys = jnp.where(left, x0, x1), jnp.where(left, y0, y1)
  xe, ye = jnp.where(left, x1, x0), jnp.where(left, y1, y0)
  t = c - xs
  d2 = 2 * jnp.maximum(dx, 1)
  va = ys + jnp.minimum(_floordiv(2 * (ye - ys), t, dx, d2), _floordiv(2 * (ye - ys), t + 1, dx, d2))
  cross_a = (dx > 0) & (xs <= c) & (c + 1 <= xe)
  # Along y: from the upper end.
  up = y0 <= y1
  xs, ys = jnp.where(up, x0, x1), jnp.where(up, y0, y1)
  xe = jnp.where(up, x1, x0)
  right = xe > xs
  k = jnp.where(right, 2 * (c - xs) + 1, 2 * (xs - c) - 1)
  vb = ys + _floordiv(dy, k, -right.astype(jnp.int32), 2 * jnp.maximum(jnp.abs(xe - xs), 1))
  cross_b = jnp.where(right, (xs <= c) & (c + 1 <= xe), (xe <= c) & (c + 1 <= xs))
  along_x = dx >= dy
  cross = jnp.where(along_x, cross_a, cross_b)
  row = jnp.clip((jnp.where(along_x, va, vb) + 2) // 5, 0, resolution)
  return cross, row


def next_vertex(poly_ids):
  """[..., V] polygon ids (-1 padding) -> [..., V] int32: the index of each vertex's
  successor in its polygon (the last vertex wraps to the polygon's first)."""
  v = poly_ids.shape[-1]
  idx = jnp.broadcast_to(jnp.arange(v, dtype=jnp.int32), poly_ids.shape)
  prev = jnp.concatenate([jnp.full_like(poly_ids[..., :1], -2), poly_ids[..., :-1]], -1)
  nxt = jnp.concatenate([poly_ids[..., 1:], jnp.full_like(poly_ids[..., :1], -2)], -1)
  first = jax.lax.cummax(jnp.where(poly_ids != prev, idx, 0), axis=poly_ids.ndim - 1)
  return jnp.where(poly_ids != nxt, first, idx + 1)


def rasterize_polygons(polys, poly_ids, boxes, resolution: int, max_polygons: int):
  """Paddle's Polys2MaskWrtBox on R instances at once: polys [R, V, 2] float32 vertices,
  poly_ids [R, V] int32 (polygon index < max_polygons, -1 padding), boxes [R, 4] (x0, y0,
  x1, y1) in the polygons' pixels -> uint8 [R, M, M]."""
  m = resolution
  boxes = boxes.astype(jnp.float32)
  w = jnp.maximum(boxes[:, 2] - boxes[:, 0], 1.0)[:, None]
  h = jnp.maximum(boxes[:, 3] - boxes[:, 1], 1.0)[:, None]
  px = (polys[..., 0].astype(jnp.float32) - boxes[:, :1]) * jnp.float32(m) / w
  py = (polys[..., 1].astype(jnp.float32) - boxes[:, 1:2]) * jnp.float32(m) / h
  x, y = _round5(px), _round5(py)
  nxt = next_vertex(poly_ids)
  x1, y1 = (jnp.take_along_axis(a, nxt, axis=-1) for a in (x, y))
  cross, row = _edge_rows(x, y, x1, y1, m)  # [R, V, M]
  cross = cross & (poly_ids >= 0)[..., None]
  r, v = poly_ids.shape
  ri = jnp.broadcast_to(jnp.arange(r)[:, None, None], (r, v, m))
  pi = jnp.broadcast_to(jnp.maximum(poly_ids, 0)[..., None], (r, v, m))
  ci = jnp.broadcast_to(jnp.arange(m), (r, v, m))
  toggles = jnp.zeros((r, max_polygons, m + 1, m), jnp.int32).at[ri, pi, row, ci].add(
      cross.astype(jnp.int32), mode='drop')
  inside = jnp.cumsum(toggles[:, :, :m], axis=2) % 2
  return jnp.any(inside > 0, axis=1).astype(jnp.uint8)


def polygon_boxes(polys, poly_ids):
  """Paddle's Poly2Boxes: [..., V, 2], [..., V] -> [..., 4] (x0, y0, x1, y1) over the
  instance's vertices (its max starts at FLT_MIN, its min at FLT_MAX)."""
  valid = (poly_ids >= 0)[..., None]
  big = np.float32(np.finfo(np.float32).max)
  tiny = np.float32(np.finfo(np.float32).tiny)
  lo = jnp.min(jnp.where(valid, polys, big), axis=-2)
  hi = jnp.max(jnp.where(valid, polys, tiny), axis=-2)
  return jnp.concatenate([lo, jnp.maximum(hi, tiny)], axis=-1)


def match_polygons(rois, polys, poly_ids, candidates):
  """generate_mask_labels' choice of instance per RoI: rois [..., R, 4] and the
  instances' polygons in the same (original) pixels, candidates [..., G] (non-crowd GTs)
  -> [..., R] int32: the candidate of largest legacy IoU between the RoI and the
  polygons' box (first on ties), the first candidate when no overlap is positive."""
  pb = polygon_boxes(polys, poly_ids)
  iou = jnp.where(candidates[..., None, :], box_iou(rois, pb, legacy=True), -1.0)
  best = jnp.argmax(iou, axis=-1)
  first = jnp.argmax(candidates, axis=-1)[..., None]
  ok = jnp.max(iou, axis=-1) > np.finfo(np.float32).tiny
  return jnp.where(ok, best, first).astype(jnp.int32)


def polygon_mask_targets(polys, poly_ids, candidates, rois, scale, resolution: int,
                         max_polygons: int):
  """generate_mask_labels' targets [B, R, M, M] (float32 0/1) for rois [B, R, 4] in
  resized pixels: polys [B, G, V, 2] / poly_ids [B, G, V] in original pixels, candidates
  [B, G] (real non-crowd GTs), scale [B] (the resize factor; RoIs are divided by it as
  Paddle does)."""
  b, r = rois.shape[:2]
  rois_o = rois.astype(jnp.float32) / scale.astype(jnp.float32)[:, None, None]
  idx = match_polygons(rois_o, polys, poly_ids, candidates)
  p = jnp.take_along_axis(polys, idx[:, :, None, None], axis=1)
  ids = jnp.take_along_axis(poly_ids, idx[:, :, None], axis=1)
  out = rasterize_polygons(p.reshape((b * r,) + p.shape[2:]), ids.reshape(b * r, -1),
                           rois_o.reshape(b * r, 4), resolution, max_polygons)
  return out.reshape(b, r, resolution, resolution).astype(jnp.float32)


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
