"""Instance-mask helpers: formats and flips."""
import json

import numpy as np
from pycocotools import mask as mask_util

from detx.data import masks


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
