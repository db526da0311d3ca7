"""The R-CNN per-example transforms: resize math, Paddle's normalise-then-resize
order, flip, crowd and max_boxes handling, GT mask crops, padding."""
import json

import cv2
import numpy as np
import pytest

from detx.data import transforms
from detx.data.bad_data import DataError
from detx.data.transforms import rcnn as T

KEYS = dict(image=np.float32, image_hw=np.int32, scale=np.float32,
            boxes=np.float32, classes=np.int32, is_crowd=np.bool_,
            box_mask=np.bool_, orig_size=np.int32, image_id=np.int64,
            valid=np.bool_)


def _example(h=60, w=90, boxes=((10, 5, 39, 44), (50, 20, 79, 49)),
             crowd=None, seed=0):
  """Random image, white filled boxes (legacy pixel xyxy), box polygons."""
  image = np.random.default_rng(seed).integers(0, 100, (h, w, 3), np.uint8)
  for x1, y1, x2, y2 in boxes:
    image[y1:y2 + 1, x1:x2 + 1] = 255
  n = len(boxes)
  segs = [json.dumps([[x1, y1, x2 + 1, y1, x2 + 1, y2 + 1, x1, y2 + 1]])
          for x1, y1, x2, y2 in boxes]
  return dict(image=image, image_id=np.int64(7), height=h, width=w,
              boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
              labels=np.arange(n, dtype=np.int32) % 3,
              is_crowd=np.zeros(n, bool) if crowd is None
              else np.asarray(crowd, bool),
              segmentation=segs)


SMALL = dict(short_side=40, long_side=67)


def test_scale_and_sizes():
  assert T.resized_shape(480, 640, 800, 1333) == (800, 1067)
  assert T.resized_shape(640, 480, 800, 1333) == (1067, 800)
  assert T.im_scale(480, 640, 800, 1333) == pytest.approx(800 / 480)
  # Long side capped.
  assert T.im_scale(400, 1200, 800, 1333) == pytest.approx(1333 / 1200)
  assert T.resized_shape(400, 1200, 800, 1333) == (444, 1333)
  assert T.resized_shape(1200, 400, 800, 1333) == (1333, 444)
  # Paddle caps only when the *rounded* long side exceeds it: 800 * 800 / 480
  # = 1333.33 rounds to 1333, so the short-side scale stays.
  assert T.im_scale(480, 800, 800, 1333) == 800 / 480
  # Vectorised = scalar = what cv2 returns.
  rng = np.random.default_rng(0)
  hs, ws = rng.integers(8, 200, 40), rng.integers(8, 200, 40)
  rh, rw = T.resized_shape(hs, ws, **SMALL)
  for h, w, a, b in zip(hs, ws, rh, rw):
    assert T.resized_shape(int(h), int(w), **SMALL) == (a, b)
    s = T.im_scale(int(h), int(w), **SMALL)
    assert T.resize(np.zeros((h, w, 3), np.float32), s).shape == (
        a, b, 3)
    assert min(a, b) <= 40 and max(a, b) <= 67


def test_normalise_before_resize_equals_numpy_transcription_of_paddle():
  """Against a numpy / OpenCV transcription of Paddle's NormalizeImage then ResizeImage
  (paddle not run)."""
  ex = _example(h=61, w=93)
  out = T.eval_example(ex, pad_shape=(64, 96), max_boxes=4, **SMALL)
  # Paddle's NormalizeImage then ResizeImage, written out plainly.
  im = ex['image'].astype(np.float32)
  im = im / 255.0
  im -= np.array([0.485, 0.456, 0.406])[np.newaxis, np.newaxis, :]
  im /= np.array([0.229, 0.224, 0.225])[np.newaxis, np.newaxis, :]
  s = 40 / 61
  ref = cv2.resize(im, None, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
  rh, rw = ref.shape[:2]
  assert out['image_hw'].tolist() == [rh, rw] == [40, 61]
  assert out['scale'] == np.float32(s)
  np.testing.assert_array_equal(out['image'][:rh, :rw], ref)
  assert not out['image'][rh:].any() and not out['image'][:, rw:].any()
  # Resizing the uint8 image first (then normalising) is measurably different.
  other = transforms.normalize_image(cv2.resize(ex['image'], None, None, fx=s, fy=s,
                                       interpolation=cv2.INTER_LINEAR))
  assert np.abs(other - ref).max() > 1e-3
  np.testing.assert_allclose(T.normalize_image_paddle(ex['image']),
                             transforms.normalize_image(ex['image']), atol=1e-5)


def test_example_format_and_boxes():
  ex = _example(crowd=[False, True])
  out = T.eval_example(ex, pad_shape=(64, 96), max_boxes=5, **SMALL)
  for k, dtype in KEYS.items():
    assert out[k].dtype == dtype, k
  assert out['image'].shape == (64, 96, 3)
  s = 40 / 60
  assert out['image_hw'].tolist() == [40, 60]
  assert out['orig_size'].tolist() == [60, 90]
  # Crowd dropped by default (Paddle's coco_loader), boxes scaled.
  assert out['box_mask'].tolist() == [True] + [False] * 4
  np.testing.assert_allclose(out['boxes'][0], np.array([10, 5, 39, 44]) * s,
                             rtol=1e-6)
  kept = T.eval_example(ex, pad_shape=(64, 96), max_boxes=5, keep_crowd=True,
                     **SMALL)
  assert kept['box_mask'].tolist() == [True, True, False, False, False]
  assert kept['is_crowd'].tolist() == [False, True, False, False, False]
  assert kept['classes'][:2].tolist() == [0, 1]
  with pytest.raises(ValueError, match='does not fit'):
    T.eval_example(ex, pad_shape=(32, 96), **SMALL)


def test_max_boxes_truncation():
  boxes = [(i * 8, 2, i * 8 + 6, 20) for i in range(10)]
  ex = _example(boxes=boxes)
  out = T.eval_example(ex, pad_shape=(64, 96), max_boxes=4, with_masks=True,
                    mask_points=16, **SMALL)
  assert out['boxes'].shape == (4, 4) and out['gt_polys'].shape == (4, 16, 2)
  assert out['box_mask'].all()
  np.testing.assert_allclose(out['boxes'] / out['scale'], ex['boxes'][:4],
                             rtol=1e-5)


def test_flip_boxes_and_masks():
  boxes = np.array([[10, 5, 39, 44], [0, 0, 89, 59]], np.float32)
  once = T.flip_boxes_legacy(boxes, 90)
  np.testing.assert_array_equal(once[0], [90 - 39 - 1, 5, 90 - 10 - 1, 44])
  np.testing.assert_array_equal(T.flip_boxes_legacy(once, 90), boxes)
  # An L-shaped polygon: its crop is not mirror-symmetric.
  ex = _example(boxes=((10, 5, 39, 44),))
  ex['segmentation'] = [json.dumps([[10, 5, 20, 5, 20, 35, 40, 35, 40, 45,
                                     10, 45]])]
  kw = dict(pad_shape=(64, 96), max_boxes=3, with_masks=True, mask_points=8,
            **SMALL)
  plain = T.transform(ex, flip=False, **kw)
  flipped = T.transform(ex, flip=True, **kw)
  # Polygons stay in original pixels; Paddle's flip_segms: x' = W - x - 1.
  xy = np.array([10, 5, 20, 5, 20, 35, 40, 35, 40, 45, 10, 45],
                np.float32).reshape(-1, 2)
  np.testing.assert_array_equal(plain['gt_polys'][0, :6], xy)
  np.testing.assert_array_equal(flipped['gt_polys'][0, :6, 0], 90 - xy[:, 0] - 1)
  np.testing.assert_array_equal(flipped['gt_polys'][0, :6, 1], xy[:, 1])
  assert plain['gt_poly_ids'][0].tolist() == [0] * 6 + [-1, -1]
  assert (plain['gt_poly_ids'][1:] == -1).all()
  s = plain['scale']
  np.testing.assert_allclose(flipped['boxes'][0],
                             np.array([90 - 39 - 1, 5, 90 - 10 - 1, 44]) * s,
                             rtol=1e-6)
  # The image flips with the boxes: the white box is under its flipped box.
  x1, y1, x2, y2 = np.round(flipped['boxes'][0]).astype(int)
  white = T.normalize_image_paddle(np.full((1, 1, 3), 255, np.uint8))[0, 0]
  np.testing.assert_allclose(
      flipped['image'][y1 + 2:y2 - 1, x1 + 2:x2 - 1].mean((0, 1)), white,
      atol=1e-4)
  # rcnn_train flips about half the time; never with augment='none'.
  flips = [T.train_example(ex, np.random.default_rng(i), **kw)['boxes'][0, 0]
           != plain['boxes'][0, 0] for i in range(20)]
  assert 3 < sum(flips) < 17
  for i in range(5):
    np.testing.assert_array_equal(
        T.train_example(ex, np.random.default_rng(i), augment='none',
                     **kw)['boxes'], plain['boxes'])


def test_padding_example():
  pad = T.padding_example((64, 96), 5, with_masks=True, mask_points=8)
  assert set(pad) == set(KEYS) | {'gt_polys', 'gt_poly_ids'}
  for k, dtype in KEYS.items():
    assert pad[k].dtype == dtype, k
  assert not pad['valid'] and pad['image_id'] == -1
  assert pad['image'].shape == (64, 96, 3) and pad['gt_polys'].shape == (
      5, 8, 2)
  assert (pad['gt_poly_ids'] == -1).all()


def test_instance_polygons_and_packing():
  box = np.array([2, 3, 12, 9], np.float32)
  two = [[0, 0, 4, 0, 4, 4], [5, 5, 8, 5, 8, 8, 5, 8]]
  got = T.instance_polygons(json.dumps(two), box, 20, 30)
  assert [p.shape for p in got] == [(3, 2), (4, 2)]
  # No segmentation: the legacy box's corners.
  np.testing.assert_array_equal(T.instance_polygons('', box, 20, 30)[0],
                                [[2, 3], [12, 3], [12, 9], [2, 9]])
  # A (non-crowd) RLE: its outer contour, through pixel centres.
  m = np.zeros((20, 30), np.uint8, order='F')
  m[4:10, 6:15] = 1
  from pycocotools import mask as mask_util
  rle = mask_util.encode(m)
  rle['counts'] = rle['counts'].decode()
  (c,) = T.instance_polygons(rle, box, 20, 30)
  assert c.min(0).tolist() == [6, 4] and c.max(0).tolist() == [14, 9]
  polys = np.zeros((2, 8, 2), np.float32)
  ids = np.full((2, 8), -1, np.int32)
  T.pack_polygons([got], polys, ids, max_polygons=2)
  assert ids[0].tolist() == [0, 0, 0, 1, 1, 1, 1, -1] and (ids[1] == -1).all()
  np.testing.assert_array_equal(polys[0, 3:7], np.reshape(two[1], (-1, 2)))
  with pytest.raises(DataError, match=r'image 7: .*max_polygons=1'):
    T.pack_polygons([got], polys, ids, max_polygons=1, image_id=7)
  with pytest.raises(DataError, match='max_points=8'):
    T.pack_polygons([got + got], polys, ids, max_polygons=4)
