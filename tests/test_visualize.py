"""Tests for detx.visualize.draw_detections."""

import numpy as np
import pytest

from detx.visualize import class_color, draw_detections


def _gray(h=120, w=160):
  return np.full((h, w, 3), 128, np.uint8)


def test_draws_inside_boxes_and_keeps_shape_dtype():
  image = _gray()
  before = image.copy()
  boxes = np.array([[20, 30, 79, 89], [100, 10, 149, 59]], np.float32)
  out = draw_detections(image, boxes, [0.9, 0.6], [0, 5], ['person', 'bus'])
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(image, before)  # input untouched
  changed = np.any(out != image, axis=-1)
  for x1, y1, x2, y2 in boxes.astype(int):
    box_region = changed[y1:y2 + 1, x1:x2 + 1]
    assert box_region[:, 0].all() and box_region[0, 1:-1].any()  # edges drawn
    assert box_region.any()
  # Far from both boxes nothing changes.
  assert not changed[100:, :15].any()
  # The left edge of box 0 is drawn in its class colour.
  assert tuple(out[60, 20]) == class_color(0)


def test_threshold_valid_and_empty():
  image = _gray()
  boxes = [[10, 10, 50, 50]]
  np.testing.assert_array_equal(draw_detections(image, boxes, [0.49], [1], None), image)
  assert (draw_detections(image, boxes, [0.5], [1], None) != image).any()  # >= thr
  assert (draw_detections(image, boxes, [0.3], [1], None, score_threshold=0.2)
          != image).any()
  np.testing.assert_array_equal(
      draw_detections(image, boxes, [0.9], [1], None, valid=[False]), image)
  empty = draw_detections(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), [])
  np.testing.assert_array_equal(empty, image)


def test_deterministic_colours():
  colours = [class_color(c) for c in range(81)]
  assert colours == [class_color(c) for c in range(81)]
  assert len(set(colours)) == 81
  image = _gray()
  args = (image, [[5, 5, 60, 60], [70, 20, 150, 110]], [0.8, 0.7], [3, 7], None)
  np.testing.assert_array_equal(draw_detections(*args), draw_detections(*args))
  # Out-of-range class ids and missing names still draw.
  assert (draw_detections(image, [[5, 5, 60, 60]], [0.8], [500], ['a']) != image).any()


def test_masks_blended():
  image = _gray()
  mask = np.zeros((120, 160), bool)
  mask[40:80, 40:100] = True
  boxes = [[40, 40, 99, 79]]
  out = draw_detections(image, boxes, [0.9], [2], ['cat'], masks=mask[None])
  plain = draw_detections(image, boxes, [0.9], [2], ['cat'])
  # Inside the mask, away from box edges and the label: blended towards the colour.
  inner = out[60:75, 60:90].astype(int)
  assert (inner != 128).any(axis=-1).all()
  colour = np.array(class_color(2))
  assert (np.abs(inner - colour).sum(-1) < np.abs(128 - colour).sum()).all()
  np.testing.assert_array_equal(plain[60:75, 60:90], image[60:75, 60:90])
  np.testing.assert_array_equal(out[:30], plain[:30])  # outside the mask as before
  # RLE dicts work too.
  from pycocotools import mask as mask_utils
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  rle['counts'] = rle['counts'].decode()
  np.testing.assert_array_equal(
      draw_detections(image, boxes, [0.9], [2], ['cat'], masks=[rle]), out)


def test_boxes_off_image_and_grey_input():
  grey = np.full((50, 70), 200, np.uint8)
  out = draw_detections(grey, [[-20, -10, 200, 300], [60, 45, 90, 80]], [0.9, 0.9],
                        [0, 1], ['a', 'b'])
  assert out.shape == (50, 70, 3) and out.dtype == np.uint8
  with pytest.raises(ValueError):
    draw_detections(grey.astype(np.float32), [], [], [], [])


def test_real_image(coco_tiny_dir):
  import json

  import cv2
  ann = json.loads((coco_tiny_dir / 'annotations/instances_val2017.json').read_text())
  info = ann['images'][0]
  image = cv2.cvtColor(cv2.imread(str(coco_tiny_dir / 'val2017' / info['file_name'])),
                       cv2.COLOR_BGR2RGB)
  cats = sorted(ann['categories'], key=lambda c: c['id'])
  names = [c['name'] for c in cats]
  index = {c['id']: i for i, c in enumerate(cats)}
  objs = [a for a in ann['annotations'] if a['image_id'] == info['id']]
  assert objs
  boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2] - 1,
                     a['bbox'][1] + a['bbox'][3] - 1] for a in objs])
  classes = np.array([index[a['category_id']] for a in objs])
  out = draw_detections(image, boxes, np.ones(len(objs)), classes, names)
  assert out.shape == image.shape and out.dtype == np.uint8
  assert (out != image).any()
