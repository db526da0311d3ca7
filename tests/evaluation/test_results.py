"""detx.evaluation.results: the one detections -> COCO results converter."""
import json

import numpy as np
import pytest

from detx.evaluation.results import coco_results, encode_mask


def test_legacy_boxes_valid_slots_and_extra_fields():
  out = coco_results(7, [[10., 20., 19., 29.], [0, 0, 0, 0], [1, 2, 1, 2]], [0.75, 0.1, 0.5],
                     [3, 0, 1], category_ids=[1, 2, 5, 9], valid=[True, False, True],
                     file_name='a.jpg')
  assert out == [
      {'image_id': 7, 'category_id': 9, 'bbox': [10.0, 20.0, 10.0, 10.0], 'score': 0.75,
       'file_name': 'a.jpg'},
      {'image_id': 7, 'category_id': 2, 'bbox': [1.0, 2.0, 1.0, 1.0], 'score': 0.5,
       'file_name': 'a.jpg'}]
  assert all(type(v) is float for r in out for v in r['bbox'] + [r['score']])
  assert coco_results(7, np.zeros((2, 4)), [0.1, 0.2], [0, 0], [1], valid=[False, False]) == []
  with pytest.raises(ValueError, match='outside'):
    coco_results(7, np.zeros((1, 4)), [0.1], [4], [1, 2, 5, 9])


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
def test_masks_as_rle_with_str_counts():
  from pycocotools import mask as mask_utils
  m = np.zeros((6, 8), np.uint8)
  m[1:4, 2:6] = 1
  rle = mask_utils.encode(np.asfortranarray(m))  # counts as bytes
  out = coco_results(1, [[2, 1, 5, 3], [0, 0, 1, 1], [2, 1, 5, 3]], [0.9, 0.8, 0.7], [0, 0, 0],
                     [1], valid=[True, False, True], masks=[m, None, rle])
  assert [r['segmentation'] for r in out] == [encode_mask(rle)] * 2
  assert isinstance(out[0]['segmentation']['counts'], str)
  assert out[0]['segmentation']['size'] == [6, 8]
  json.dumps(out)
  back = dict(out[0]['segmentation'], counts=out[0]['segmentation']['counts'].encode())
  np.testing.assert_array_equal(mask_utils.decode(back), m)
  with pytest.raises(ValueError, match=r'\[H, W\]'):
    encode_mask(np.zeros((2, 3, 4)))


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
def test_results_with_masks_load_in_pycocotools(coco_tiny_dir, tmp_path):
  """bbox + segmentation results, written as json, are accepted by COCO.loadRes."""
  from detx.evaluation.coco import load_coco
  coco = load_coco(coco_tiny_dir / 'annotations/instances_val2017.json')
  image_id = sorted(coco.getImgIds())[0]
  im = coco.imgs[image_id]
  m = np.zeros((im['height'], im['width']), np.uint8)
  m[10:40, 20:60] = 1
  out = coco_results(image_id, [[20, 10, 59, 39]], [0.9], [0], sorted(coco.getCatIds()),
                     masks=[m], file_name=im['file_name'])
  path = tmp_path / 'detections.json'
  path.write_text(json.dumps(out))
  res = coco.loadRes(str(path))
  (ann,) = res.loadAnns(res.getAnnIds())
  assert ann['bbox'] == [20.0, 10.0, 40.0, 30.0] and ann['area'] == 1200.0
  np.testing.assert_array_equal(res.annToMask(ann), m)
