"""Mask targets (Paddle's generate_mask_labels: polygons rasterised in each RoI) and the
test-time paste (mask2out).

The targets are compared with (a) a line-by-line Python transcription of Paddle's
Poly2Mask / pycocotools' rleFrPoly walk in exact integer arithmetic (equality), and (b)
pycocotools' frPyObjects / merge / decode itself on the same float32-transformed polygons,
which differs from (a) only where the walk's double rounding lands on a tie (bounded
below).
"""
from fractions import Fraction
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools import mask as mask_util

from detx.ops.masks import (expand_boxes, match_polygons, paste_mask, paste_masks,
                            polygon_mask_targets, rasterize_polygons)


def _frame(polys, box, m):
  """Polys2MaskWrtBox's float32 transform of each polygon into the box frame."""
  box = np.asarray(box, np.float32)
  w = max(np.float32(box[2] - box[0]), np.float32(1.0))
  h = max(np.float32(box[3] - box[1]), np.float32(1.0))
  out = []
  for p in polys:
    p = np.asarray(p, np.float32).reshape(-1, 2)
    x = (p[:, 0] - box[0]) * np.float32(m) / w
    y = (p[:, 1] - box[1]) * np.float32(m) / h
    out.append(np.stack([x, y], 1).astype(np.float32))
  return out


def _walk(xy, m):
  """Poly2Mask transcribed line by line, with the double expressions evaluated exactly
  (Fractions; C's casts truncate toward zero) -> uint8 [m, m]."""
  def trunc(q):
    return int(q)  # int() of a Fraction truncates toward zero, as C's cast does
  k = len(xy)
  x = [trunc(5 * Fraction(float(v)) + Fraction(1, 2)) for v in xy[:, 0]]
  y = [trunc(5 * Fraction(float(v)) + Fraction(1, 2)) for v in xy[:, 1]]
  x.append(x[0])
  y.append(y[0])
  u, v = [], []
  for j in range(k):
    xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
    dx, dy = abs(xe - xs), abs(ys - ye)
    flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
    if flip:
      xs, xe, ys, ye = xe, xs, ye, ys
    if dx >= dy:
      s = Fraction(ye - ys, dx) if dx else Fraction(0)
      for d in range(dx + 1):
        t = dx - d if flip else d
        u.append(t + xs)
        v.append(trunc(ys + s * t + Fraction(1, 2)))
    else:
      s = Fraction(xe - xs, dy)
      for d in range(dy + 1):
        t = dy - d if flip else d
        v.append(t + ys)
        u.append(trunc(xs + s * t + Fraction(1, 2)))
  out = np.zeros((m + 1, m), np.int64)  # toggles by (row, column)
  for j in range(1, len(u)):
    if u[j] != u[j - 1]:
      xd = Fraction(min(u[j], u[j - 1]) * 2 + 1, 10) - Fraction(1, 2)
      if xd.denominator != 1 or xd < 0 or xd > m - 1:
        continue
      yd = Fraction(min(v[j], v[j - 1]) * 2 + 1, 10) - Fraction(1, 2)
      yd = min(max(yd, 0), m)
      out[-(-yd.numerator // yd.denominator), int(xd)] += 1
  return (np.cumsum(out[:m], 0) % 2).astype(np.uint8)


def _reference(polys, box, m, exact):
  frame = _frame(polys, box, m)
  if exact:
    return np.max([_walk(p, m) for p in frame], axis=0)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    rle = mask_util.merge(mask_util.frPyObjects(
        [p.astype(np.float64).reshape(-1).tolist() for p in frame], m, m))
    return mask_util.decode(rle)


def _pack(instances, v, g=None):
  """[[polygon (flat list), ...], ...] -> polys [G, V, 2], poly_ids [G, V]."""
  g = g or len(instances)
  polys = np.zeros((g, v, 2), np.float32)
  ids = np.full((g, v), -1, np.int32)
  for i, inst in enumerate(instances):
    n = 0
    for j, p in enumerate(inst):
      p = np.asarray(p, np.float32).reshape(-1, 2)
      polys[i, n:n + len(p)] = p
      ids[i, n:n + len(p)] = j
      n += len(p)
  return polys, ids


def _random_case(rng, n, m):
  """n random instances (1-3 polygons of 3-9 vertices, some concave, some beyond the
  RoI, some with negative frame coordinates) and a RoI about each."""
  instances, boxes = [], []
  for _ in range(n):
    cx, cy = rng.uniform(0, 200, 2)
    r = rng.uniform(0.3, 60)
    polys = []
    for _ in range(rng.integers(1, 4)):
      k = rng.integers(3, 10)
      ang = np.sort(rng.uniform(0, 2 * np.pi, k)) if rng.uniform() < 0.5 else rng.uniform(
          0, 2 * np.pi, k)
      rad = r * rng.uniform(0.2, 1.2, k)
      off = rng.normal(0, r / 2, 2)
      pts = np.stack([cx + off[0] + rad * np.cos(ang), cy + off[1] + rad * np.sin(ang)], 1)
      if rng.uniform() < 0.2:
        pts = np.round(pts * 2) / 2  # on the half-pixel lattice: exact ties in the frame
      polys.append(pts.reshape(-1).tolist())
    instances.append(polys)
    x0, y0 = cx - r * rng.uniform(0.2, 1.5), cy - r * rng.uniform(0.2, 1.5)
    boxes.append([x0, y0, x0 + r * rng.uniform(0.02, 3), y0 + r * rng.uniform(0.02, 3)])
  return instances, np.asarray(boxes, np.float32)


@pytest.mark.parametrize('m', [14, 28])
def test_rasterize_equals_exact_transcription_and_pycocotools(m):
  rng = np.random.default_rng(m)
  instances, boxes = _random_case(rng, 60, m)
  polys, ids = _pack(instances, 27)
  got = np.asarray(jax.jit(rasterize_polygons, static_argnums=(3, 4))(
      jnp.asarray(polys), jnp.asarray(ids), jnp.asarray(boxes), m, 3))
  coco_diff = 0
  for i, inst in enumerate(instances):
    np.testing.assert_array_equal(got[i], _reference(inst, boxes[i], m, exact=True),
                                  err_msg=f'instance {i}')
    coco_diff += int((got[i] != _reference(inst, boxes[i], m, exact=False)).sum())
  # pycocotools' double arithmetic may round a tie the other way: at most 0.1% of pixels.
  assert coco_diff <= 0.001 * got.size, coco_diff
  assert 0.05 < got.mean() < 0.95


def test_matching_and_batched_targets():
  m = 8
  a = [[10, 10, 50, 10, 50, 50, 10, 50]]                   # a square
  b = [[60, 0, 90, 0, 90, 30], [100, 40, 120, 40, 110, 60]]  # two triangles
  polys, ids = _pack([a, b, a], 8)
  cand = np.array([[True, True, False]])
  scale = np.float32(2.0)
  # RoIs in resized pixels (x2): the square, the triangles' box, nothing, a crowd-only spot.
  rois = np.array([[[20, 20, 100, 100], [120, 0, 240, 120], [400, 400, 420, 420]]],
                  np.float32)
  idx = np.asarray(match_polygons(jnp.asarray(rois / scale), jnp.asarray(polys)[None],
                                  jnp.asarray(ids)[None], jnp.asarray(cand)))
  np.testing.assert_array_equal(idx, [[0, 1, 0]])  # no overlap: the first candidate
  t = np.asarray(polygon_mask_targets(jnp.asarray(polys)[None], jnp.asarray(ids)[None],
                                      jnp.asarray(cand), jnp.asarray(rois),
                                      jnp.asarray([scale]), m, 2))
  assert t.shape == (1, 3, m, m) and t.dtype == np.float32
  for r, inst in enumerate([a, b, a]):
    np.testing.assert_array_equal(t[0, r], _reference(inst, rois[0, r] / scale, m, True))
  assert t[0, 0].all() and t[0, 1].any() and not t[0, 2].any()


def test_expand_boxes():
  np.testing.assert_allclose(expand_boxes([[10, 20, 30, 60]], 1.5), [[5, 10, 35, 70]])


def test_paste_full_mask_covers_its_box():
  prob = np.ones((28, 28), np.float32)
  box = [10.0, 20.0, 49.0, 59.0]
  m = paste_mask(prob, box, (100, 120))
  assert m.shape == (100, 120) and m.dtype == np.uint8
  ys, xs = np.nonzero(m)
  # The (M + 2) / M expansion and the bilinear ramp at the zero border put the edge
  # within about a pixel of the box.
  assert abs(xs.min() - 10) <= 1 and abs(xs.max() - 49) <= 1
  assert abs(ys.min() - 20) <= 1 and abs(ys.max() - 59) <= 1


def test_paste_clips_to_the_image_and_handles_tiny_boxes():
  prob = np.ones((14, 14), np.float32)
  m = paste_mask(prob, [-20.0, 90.0, 30.0, 130.0], (100, 50))
  assert m[95:, :30].all() and not m[:85].any()
  tiny = paste_mask(prob, [5.0, 5.0, 5.0, 5.0], (10, 10))
  assert tiny.shape == (10, 10) and tiny.sum() <= 4


def test_paste_masks_rle():
  pycoco = pytest.importorskip('pycocotools.mask')
  probs = np.zeros((3, 28, 28), np.float32)
  probs[0, 7:21, 7:21] = 0.9
  probs[2] = 0.2  # below the threshold everywhere
  boxes = np.array([[0, 0, 27, 27], [1, 1, 5, 5], [0, 0, 10, 10]], np.float32)
  rles = paste_masks(probs, boxes, np.array([True, False, True]), (40, 30))
  assert rles[1] is None
  assert isinstance(rles[0]['counts'], str) and list(rles[0]['size']) == [40, 30]
  dec = pycoco.decode({'size': rles[0]['size'], 'counts': rles[0]['counts'].encode()})
  np.testing.assert_array_equal(dec, paste_mask(probs[0], boxes[0], (40, 30)))
  assert 120 < dec.sum() < 200  # about the central 14 x 14 (the border shrinks it a little)
  assert pycoco.decode({'size': rles[2]['size'], 'counts': rles[2]['counts'].encode()}).sum() == 0
