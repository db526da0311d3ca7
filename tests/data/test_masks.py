"""Instance-mask helpers: formats, flips and box-frame crops."""
import json

import numpy as np
from pycocotools import mask as mask_util

from detx.data import annotations
from detx.data import masks

M = 28


def _iou(a, b):
  return (a & b).sum() / max((a | b).sum(), 1)


def test_parse_and_formats():
  poly = [[10, 20, 60, 20, 60, 80, 10, 80]]
  assert masks.parse(json.dumps(poly)) == poly
  assert masks.parse('') == [] and masks.parse(None) == []
  full = masks.decode(json.dumps(poly), 100, 120)
  assert full.shape == (100, 120) and full.sum() == 50 * 60
  assert full[20:80, 10:60].all()
  # Uncompressed and compressed RLE of the same mask decode alike.
  rle = mask_util.encode(np.asfortranarray(full))
  compressed = dict(size=rle['size'], counts=rle['counts'].decode())
  flat = full.ravel(order='F')
  changes = np.flatnonzero(np.diff(flat)) + 1
  counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  uncompressed = dict(size=[100, 120], counts=counts)
  for seg in (compressed, uncompressed, json.dumps(uncompressed)):
    np.testing.assert_array_equal(masks.decode(seg, 100, 120), full)
    assert masks.area(seg, 100, 120) == 3000


def test_polygon_crop_fills_its_box():
  # A rectangle polygon spanning exactly the box frame [x1, x2] x [y1, y2].
  poly = [[10, 20, 60, 20, 60, 80, 10, 80]]
  crop = masks.crop(json.dumps(poly), [10, 20, 60, 80], M, 100, 120)
  assert crop.shape == (M, M) and crop.dtype == np.uint8
  assert crop.all()
  # Left half of the frame only.
  half = [[10, 20, 35, 20, 35, 80, 10, 80]]
  crop = masks.crop(half, [10, 20, 60, 80], M, 100, 120)
  assert crop[:, :M // 2].all() and not crop[:, M // 2:].any()


def test_rle_crop_matches_polygon_crop():
  poly = [[30.5, 12, 90, 40, 70, 95.5, 20, 70]]
  box = [20, 12, 90, 95.5]
  a = masks.crop(poly, box, M, 100, 120)
  rle = mask_util.merge(mask_util.frPyObjects(poly, 100, 120))
  rle['counts'] = rle['counts'].decode()
  b = masks.crop(rle, box, M, 100, 120)
  assert _iou(a, b) > 0.9
  assert abs(int(a.sum()) - int(b.sum())) < 0.05 * a.sum()


def test_empty_segmentation_is_a_full_box():
  for seg in ('', '[]', [], [[1, 2, 3, 4]]):  # the last: a degenerate polygon
    assert masks.crop(seg, [5, 5, 20, 30], M, 40, 40).all()


def test_flip_segmentation_paddle():
  h, w = 50, 80
  poly = [[10, 5, 40, 5, 30, 45]]
  flipped = masks.flip_segmentation(poly, h, w)
  np.testing.assert_allclose(flipped[0][0::2], [w - 1 - 10, w - 1 - 40,
                                                w - 1 - 30])
  assert flipped[0][1::2] == poly[0][1::2]
  np.testing.assert_allclose(masks.flip_segmentation(flipped, h, w), poly)
  full = masks.decode(poly, h, w)
  rle = masks.flip_segmentation(json.dumps(
      {'size': [h, w], 'counts': mask_util.encode(np.asfortranarray(full))[
          'counts'].decode()}), h, w)
  np.testing.assert_array_equal(masks.decode(rle, h, w), full[:, ::-1])
  np.testing.assert_array_equal(
      masks.decode(masks.flip_segmentation(rle, h, w), h, w), full)


def test_crop_of_flipped_polygon_is_mirrored_crop():
  """Paddle's literal flip (polygon and box x' = W - 1 - x) gives the
  mirrored crop: what the pipeline uses."""
  h, w = 100, 120
  poly = [[30.5, 12, 90, 40, 70, 95.5, 20, 70]]
  box = np.array([20, 12, 90, 95.5], np.float32)
  fbox = np.array([w - 1 - box[2], box[1], w - 1 - box[0], box[3]])
  a = masks.crop(poly, box, 56, h, w)
  b = masks.crop(masks.flip_segmentation(poly, h, w), fbox, 56, h, w)
  assert _iou(a[:, ::-1], b) > 0.97


def test_coco_tiny_polygon_and_rle_areas(coco_tiny_dir):
  """Crop coverage ~ instance area / box-frame area, for polygons (vs the
  annotation's area) and for crowd RLEs (vs the RLE's own area: COCO crowd
  `area` fields disagree with their RLEs by up to ~25%)."""
  ann, _ = annotations.layout(coco_tiny_dir, 'train')
  d = json.loads(ann.read_text())
  images = {im['id']: im for im in d['images']}
  n_poly = n_rle = 0
  for a in d['annotations']:
    im = images[a['image_id']]
    hh, ww = im['height'], im['width']
    if min(a['bbox'][2:]) < 40:
      continue
    box = annotations.convert_box(a['bbox'], ww, hh)
    _, _, fw, fh = masks.box_frame(box)
    seg = json.dumps(a['segmentation'])
    crop = masks.crop(seg, box, 112, hh, ww)
    if a['iscrowd']:
      assert isinstance(a['segmentation'], dict)
      expected = masks.area(seg, hh, ww) / (fw * fh)
      n_rle += 1
    else:
      expected = a['area'] / (fw * fh)
      n_poly += 1
    assert abs(crop.mean() - expected) < 0.1 * expected + 0.01, a['id']
  assert n_poly > 50 and n_rle >= 2
