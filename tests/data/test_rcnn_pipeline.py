"""The R-CNN data pipeline: resize math, flip, Paddle's normalise-then-resize
order, GT mask crops, aspect-grouped buckets, resume, eval padding."""
import itertools
import json
import pickle

import cv2
import numpy as np
import pytest

from detx.data import loader
from detx.data import masks
from detx.data import transforms as T

KEYS = dict(image=np.float32, image_hw=np.int32, scale=np.float32,
            boxes=np.float32, classes=np.int32, is_crowd=np.bool_,
            box_mask=np.bool_, orig_size=np.int32, image_id=np.int64,
            valid=np.bool_)


def _take(it, n):
  out = list(itertools.islice(it, n))
  close = getattr(it, 'close', None)
  if close:
    close()
  return out


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


# ----------------------------------------------------------------------------
# Resize / bucket math.

def test_scale_and_sizes():
  assert T.rcnn_resized_shape(480, 640, 800, 1333) == (800, 1067)
  assert T.rcnn_resized_shape(640, 480, 800, 1333) == (1067, 800)
  assert T.rcnn_scale(480, 640, 800, 1333) == pytest.approx(800 / 480)
  # Long side capped.
  assert T.rcnn_scale(400, 1200, 800, 1333) == pytest.approx(1333 / 1200)
  assert T.rcnn_resized_shape(400, 1200, 800, 1333) == (444, 1333)
  assert T.rcnn_resized_shape(1200, 400, 800, 1333) == (1333, 444)
  # Paddle caps only when the *rounded* long side exceeds it: 800 * 800 / 480
  # = 1333.33 rounds to 1333, so the short-side scale stays.
  assert T.rcnn_scale(480, 800, 800, 1333) == 800 / 480
  # Vectorised = scalar = what cv2 returns.
  rng = np.random.default_rng(0)
  hs, ws = rng.integers(8, 200, 40), rng.integers(8, 200, 40)
  rh, rw = T.rcnn_resized_shape(hs, ws, **SMALL)
  for h, w, a, b in zip(hs, ws, rh, rw):
    assert T.rcnn_resized_shape(int(h), int(w), **SMALL) == (a, b)
    s = T.rcnn_scale(int(h), int(w), **SMALL)
    assert T.rcnn_resize(np.zeros((h, w, 3), np.float32), s).shape == (
        a, b, 3)
    assert min(a, b) <= 40 and max(a, b) <= 67


def test_buckets_and_max_size(data_config, tmp_path):
  cfg = data_config(tmp_path, **{'data.pipeline': 'rcnn',
                                 'eval.batch_size': 1})
  assert loader.bucket_shapes(cfg) == [(800, 1344), (1344, 800)]
  cfg.data.pad_multiple = 128  # RetinaNet
  assert loader.bucket_shapes(cfg) == [(896, 1408), (1408, 896)]
  cfg.eval.batch_size = 2  # eval batches may mix orientations
  assert loader.bucket_shapes(cfg, 'train') == [(896, 1408), (1408, 896)]
  assert loader.bucket_shapes(cfg) == [(896, 1408), (1408, 896),
                                       (1408, 1408)]
  cfg.data.pad_multiple = 32
  cfg.eval.batch_size = 1
  # max_size: long side N, short side and buckets scale by N / 1333.
  cfg.data.max_size = 512
  assert T.rcnn_sizes(800, 1333, 512) == (307, 512, 512 / 1333)
  assert loader.rcnn_settings(cfg)['short_side'] == 307
  assert loader.rcnn_settings(cfg)['long_side'] == 512
  assert loader.bucket_shapes(cfg) == [(320, 512), (512, 320)]
  cfg.data.buckets = [[800, 1344], [1344, 1344]]
  f = 512 / 1333
  assert loader.bucket_shapes(cfg) == [
      (T.ceil_to(800 * f, 32), T.ceil_to(1344 * f, 32)),
      (T.ceil_to(1344 * f, 32), T.ceil_to(1344 * f, 32))] == [(320, 544),
                                                                (544, 544)]
  cfg.data.max_size = 2000  # larger than the zoo size: unchanged
  assert loader.bucket_shapes(cfg) == [(800, 1344), (1344, 1344)]
  # Every resized image fits the default buckets.
  for h, w in [(480, 640), (640, 480), (100, 1000), (1000, 100), (500, 500)]:
    shape = T.rcnn_resized_shape(h, w, 800, 1333)
    assert T.pick_bucket([shape], T.rcnn_buckets(800, 1333)) == (
        (800, 1344) if w >= h else (1344, 800))
  with pytest.raises(ValueError, match='no shape bucket'):
    T.pick_bucket([(800, 1067), (1067, 800)], T.rcnn_buckets(800, 1333))


# ----------------------------------------------------------------------------
# Per-example transform.

def test_normalise_before_resize_matches_paddle():
  ex = _example(h=61, w=93)
  out = T.rcnn_eval(ex, pad_shape=(64, 96), max_boxes=4, **SMALL)
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
  other = T.normalize_image(cv2.resize(ex['image'], None, None, fx=s, fy=s,
                                       interpolation=cv2.INTER_LINEAR))
  assert np.abs(other - ref).max() > 1e-3
  np.testing.assert_allclose(T.normalize_image_paddle(ex['image']),
                             T.normalize_image(ex['image']), atol=1e-5)


def test_example_format_and_boxes():
  ex = _example(crowd=[False, True])
  out = T.rcnn_eval(ex, pad_shape=(64, 96), max_boxes=5, **SMALL)
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
  kept = T.rcnn_eval(ex, pad_shape=(64, 96), max_boxes=5, keep_crowd=True,
                     **SMALL)
  assert kept['box_mask'].tolist() == [True, True, False, False, False]
  assert kept['is_crowd'].tolist() == [False, True, False, False, False]
  assert kept['classes'][:2].tolist() == [0, 1]
  with pytest.raises(ValueError, match='does not fit'):
    T.rcnn_eval(ex, pad_shape=(32, 96), **SMALL)


def test_max_boxes_truncation():
  boxes = [(i * 8, 2, i * 8 + 6, 20) for i in range(10)]
  ex = _example(boxes=boxes)
  out = T.rcnn_eval(ex, pad_shape=(64, 96), max_boxes=4, with_masks=True,
                    mask_size=14, **SMALL)
  assert out['boxes'].shape == (4, 4) and out['gt_masks'].shape == (4, 14, 14)
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
  kw = dict(pad_shape=(64, 96), max_boxes=3, with_masks=True, mask_size=16,
            **SMALL)
  plain = T.rcnn_example(ex, flip=False, **kw)
  flipped = T.rcnn_example(ex, flip=True, **kw)
  m = plain['gt_masks'][0]
  assert m.any() and not np.array_equal(m, m[:, ::-1])
  np.testing.assert_array_equal(flipped['gt_masks'][0], m[:, ::-1])
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
  flips = [T.rcnn_train(ex, np.random.default_rng(i), **kw)['boxes'][0, 0]
           != plain['boxes'][0, 0] for i in range(20)]
  assert 3 < sum(flips) < 17
  for i in range(5):
    np.testing.assert_array_equal(
        T.rcnn_train(ex, np.random.default_rng(i), augment='none',
                     **kw)['boxes'], plain['boxes'])


def test_padding_example():
  pad = T.rcnn_padding_example((64, 96), 5, with_masks=True, mask_size=8)
  assert set(pad) == set(KEYS) | {'gt_masks'}
  for k, dtype in KEYS.items():
    assert pad[k].dtype == dtype, k
  assert not pad['valid'] and pad['image_id'] == -1
  assert pad['image'].shape == (64, 96, 3) and pad['gt_masks'].shape == (
      5, 8, 8)


# ----------------------------------------------------------------------------
# Real data: loader batches.

@pytest.fixture
def cfg(coco_tiny_dir, data_config):
  return data_config(coco_tiny_dir, **{
      'data.pipeline': 'rcnn', 'data.max_size': 96, 'data.max_boxes': 40,
      'train.batch_size': 4, 'eval.batch_size': 3})


def test_gt_masks_from_coco_tiny(cfg):
  cfg.data.with_masks = True
  cfg.data.keep_crowd = True
  cfg.data.mask_size = 56
  ds = loader.build(cfg, 'train')
  index = int(np.flatnonzero(ds.image_ids == 262145)[0])  # has crowd RLEs
  ex = ds[index]
  settings = loader.rcnn_settings(cfg)
  out = T.rcnn_eval(ex, pad_shape=loader.bucket_shapes(cfg)[0], **settings)
  n = len(ex['boxes'])
  assert out['box_mask'].sum() == n
  assert out['is_crowd'][:n].tolist() == ex['is_crowd'].tolist()
  assert ex['is_crowd'].sum() >= 2
  for k in range(n):
    box = ex['boxes'][k]
    _, _, fw, fh = masks.box_frame(box)
    if min(fw, fh) < 40:
      continue
    seg = ex['segmentation'][k]
    ref = (masks.area(seg, ex['height'], ex['width']) if ex['is_crowd'][k]
           else ex['area'][k])
    expected = ref / (fw * fh)
    got = out['gt_masks'][k].mean()
    assert abs(got - expected) < 0.1 * expected + 0.02, (k, got, expected)
  # Without keep_crowd the crowd boxes (and their masks) are gone.
  cfg.data.keep_crowd = False
  out = T.rcnn_eval(ex, pad_shape=loader.bucket_shapes(cfg)[0],
                    **loader.rcnn_settings(cfg))
  assert out['box_mask'].sum() == n - ex['is_crowd'].sum()
  assert not out['is_crowd'].any()


def test_grouping_deterministic_and_resumable(cfg):
  ds = loader.build(cfg, 'train')
  sizes = ds.image_sizes
  assert sizes.shape == (80, 2)
  assert sizes[0].tolist() == list(ds[0]['image'].shape[:2])
  kw = dict(seed=0, batch_size=4, augment='full', shuffle=True,
            settings=loader.rcnn_settings(cfg),
            buckets=loader.bucket_shapes(cfg, 'train'))
  fn = loader.RcnnTrainExample(ds, **kw)
  land = sizes[:, 1] >= sizes[:, 0]
  n_land = int(land.sum())
  k = fn.batches_per_epoch
  assert k == -(-n_land // 4) + -(-(80 - n_land) // 4)
  for epoch in range(2):
    batches = fn.epoch_batches(epoch)
    assert batches.shape == (k, 4)
    assert set(batches.ravel()) == set(range(80))  # every image every epoch
    for b in batches:  # one orientation per batch
      assert len(set(land[b])) == 1
  assert not np.array_equal(fn.epoch_batches(0), fn.epoch_batches(1))
  # A pure function of (seed, step): fresh / unpickled instances agree.
  again = pickle.loads(pickle.dumps(loader.RcnnTrainExample(ds, **kw)))
  for step in (0, 5, k - 1, k, 3 * k + 2):
    np.testing.assert_array_equal(fn.batch_records(step),
                                  again.batch_records(step))
  other = loader.RcnnTrainExample(ds, **dict(kw, seed=1))
  assert not np.array_equal(fn.epoch_batches(0), other.epoch_batches(0))
  # Iterator: shared bucket per batch, deterministic, exact resume.
  batches = _take(loader.train_iterator(cfg, ds), 4)
  buckets = loader.bucket_shapes(cfg, 'train')
  for step, b in enumerate(batches):
    assert tuple(b['image'].shape[1:3]) in buckets
    assert tuple(b['image'].shape[1:3]) == fn.bucket(step)
    for key, dtype in KEYS.items():
      assert b[key].dtype == dtype, key
    assert b['boxes'].shape == (4, 40, 4) and b['valid'].all()
    assert (b['image_hw'] <= b['image'].shape[1:3]).all()
    np.testing.assert_array_equal(b['image_id'],
                                  ds.image_ids[fn.batch_records(step)])
    for i in range(4):  # within the (W - 1, H - 1) * scale
      real = b['boxes'][i][b['box_mask'][i]]
      lim = (b['orig_size'][i] - 1) * b['scale'][i] + 1e-3
      assert (real >= 0).all()
      assert (real[:, 2] <= lim[1]).all() and (real[:, 3] <= lim[0]).all()
  resumed = _take(loader.train_iterator(cfg, ds, start_step=2), 2)
  for a, b in zip(batches[2:], resumed):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_eval_batches(cfg):
  # coco_tiny val's first 22 images in batches of 3 give landscape-only,
  # mixed, portrait-only batches and a last batch with 2 padding elements.
  cfg.eval.limit = 22
  ds = loader.build(cfg, 'val')
  batches = list(loader.eval_iterator(cfg, ds))
  assert len(batches) == 8
  ids = np.concatenate([b['image_id'] for b in batches])
  assert ids[:22].tolist() == ds.image_ids.tolist() and (ids[22:] == -1).all()
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.tolist() == [True] * 22 + [False] * 2
  buckets = loader.bucket_shapes(cfg, 'eval')
  assert buckets == [(64, 96), (96, 64), (96, 96)]
  land = ds.image_sizes[:, 1] >= ds.image_sizes[:, 0]
  seen = set()
  for i, b in enumerate(batches):
    shape = tuple(b['image'].shape[1:3])
    present = set(land[3 * i:3 * i + 3])
    # Landscape / portrait / square (the batch mixes orientations).
    assert shape == buckets[0 if present == {True} else
                            1 if present == {False} else 2]
    seen.add(shape)
    assert (b['image_hw'][b['valid']] <= shape).all()
    for key, dtype in KEYS.items():
      assert b[key].dtype == dtype, key
  assert seen == set(buckets)
  pad = batches[-1]
  assert not pad['image'][1:].any() and not pad['box_mask'][1:].any()
  # Batch size 1: each image in its own orientation's bucket.
  for b, is_land in zip(loader.eval_iterator(cfg, ds, batch_size=1), land):
    assert b['image'].shape[1:3] == ((64, 96) if is_land else (96, 64))
    assert b['valid'].all()


def test_yolo_default_pipeline_untouched(cfg):
  cfg.data.pipeline = 'yolo'
  assert loader.pipeline(cfg) == 'yolo'
  del cfg.data['pipeline']
  assert loader.pipeline(cfg) == 'yolo'
  cfg.data.pipeline = 'ssd'
  with pytest.raises(ValueError, match='data.pipeline'):
    loader.pipeline(cfg)
