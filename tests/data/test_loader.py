"""grain loaders: batch format, determinism, resume, eval padding."""
import itertools

import numpy as np
import pytest

from detx.data import loader

KEYS = dict(image=np.float32, boxes=np.float32, classes=np.int32,
            scores=np.float32, box_mask=np.bool_, image_id=np.int64,
            orig_size=np.int32, valid=np.bool_)


@pytest.fixture
def cfg(shapes_dir, data_config):
  return data_config(shapes_dir, **{
      'data.train_sizes': [64, 96, 128], 'data.max_boxes': 8,
      'train.batch_size': 4, 'eval.size': 96, 'eval.batch_size': 3,
      'data.mixup_epochs': 2})


def _take(it, n):
  out = list(itertools.islice(it, n))
  close = getattr(it, 'close', None)
  if close:
    close()
  return out


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_dataset(cfg, shapes_dir):
  ds = loader.build(cfg, 'train')
  assert ds.num_images == len(ds) == 24
  assert list(ds.image_ids) == list(range(1, 25))
  assert ds.category_names == ['circle', 'square', 'triangle', 'cross']
  assert ds.category_ids == [1, 2, 3, 4]
  assert ds.annotation_file.endswith('annotations/instances_train2017.json')
  assert ds.dir == str(shapes_dir.resolve())
  ex = ds[0]
  assert ex['image'].shape == (64, 64, 3) and ex['image'].dtype == np.uint8
  assert ex['boxes'].dtype == np.float32 and ex['boxes'].shape[1] == 4
  with pytest.raises(IndexError):
    ds[24]


def test_limits(cfg):
  cfg.data.train_limit = 5
  cfg.eval.limit = 3
  train = loader.build(cfg, 'train')
  val = loader.build(cfg, 'val')
  assert list(train.image_ids) == [1, 2, 3, 4, 5]
  assert val.num_images == 3 and list(val.image_ids) == sorted(val.image_ids)
  # Only the first N images are ever sampled.
  ids = np.concatenate([b['image_id'] for b in
                        _take(loader.train_iterator(cfg, train), 4)])
  assert set(ids) <= {1, 2, 3, 4, 5}


def test_train_batch_format(cfg):
  ds = loader.build(cfg, 'train')
  for b in _take(loader.train_iterator(cfg, ds), 3):
    assert b.keys() == KEYS.keys()
    for k, dtype in KEYS.items():
      assert b[k].dtype == dtype, k
    size = b['image'].shape[1]
    assert size in (64, 96, 128)
    assert b['image'].shape == (4, size, size, 3)
    assert b['boxes'].shape == (4, 8, 4)
    assert b['classes'].shape == b['scores'].shape == b['box_mask'].shape == (
        4, 8)
    assert b['orig_size'].shape == (4, 2) and (b['orig_size'] == 64).all()
    assert b['valid'].all()
    m = b['box_mask']
    assert m.any(1).all()
    assert ((b['boxes'][m] >= 0) & (b['boxes'][m] <= 1)).all()
    assert ((b['classes'][m] >= 0) & (b['classes'][m] < 4)).all()
    assert ((b['scores'][m] > 0) & (b['scores'][m] <= 1)).all()


def test_deterministic_and_resumable(cfg):
  ds = loader.build(cfg, 'train')
  a = _take(loader.train_iterator(cfg, ds), 6)
  b = _take(loader.train_iterator(cfg, ds), 6)
  assert all(_equal(x, y) for x, y in zip(a, b))
  resumed = _take(loader.train_iterator(cfg, ds, start_step=3), 3)
  assert all(_equal(x, y) for x, y in zip(a[3:], resumed))
  # multi-scale: several sizes are drawn
  assert len({x['image'].shape[1] for x in a}) > 1
  cfg.seed = 1
  other = _take(loader.train_iterator(cfg, ds), 2)
  assert not _equal(a[0], other[0])


def test_epochs_and_mixup(cfg):
  ds = loader.build(cfg, 'train')  # 24 images, batch 4: 6 steps per epoch
  batches = _take(loader.train_iterator(cfg, ds), 18)
  # Each epoch visits every image once (a permutation per epoch).
  for e in range(3):
    ids = np.concatenate([b['image_id'] for b in batches[6 * e:6 * e + 6]])
    assert sorted(ids) == list(range(1, 25))
  first = np.concatenate([b['image_id'] for b in batches[:6]])
  second = np.concatenate([b['image_id'] for b in batches[6:12]])
  assert list(first) != list(second)
  # mixup_epochs=2: gt_score < 1 in epochs 0-1, exactly 1 from epoch 2 on.
  mixed = np.concatenate([b['scores'][b['box_mask']] for b in batches[:12]])
  plain = np.concatenate([b['scores'][b['box_mask']] for b in batches[12:]])
  assert (mixed < 1).mean() > 0.9
  assert (plain == 1).all()


def test_no_augment_no_shuffle(cfg):
  cfg.data.augment = False
  cfg.data.shuffle = False
  cfg.data.train_sizes = [96]
  ds = loader.build(cfg, 'train')
  train = _take(loader.train_iterator(cfg, ds), 2)
  cfg.eval.batch_size = 4
  cfg.eval.size = 96
  evals = _take(loader.eval_iterator(cfg, loader.build(cfg, 'train')), 2)
  # No augmentation: training batches equal the eval pipeline's, in order.
  for t, e in zip(train, evals):
    assert _equal(t, e)
  assert list(train[0]['image_id']) == [1, 2, 3, 4]


def test_max_size_scales_sizes(cfg):
  cfg.data.max_size = 64
  cfg.data.train_sizes = [320, 416, 608]
  cfg.eval.size = 608
  assert loader.train_sizes(cfg) == [64]
  assert loader.eval_size(cfg) == 64
  ds = loader.build(cfg, 'val')
  b = _take(loader.eval_iterator(cfg, ds), 1)[0]
  assert b['image'].shape == (3, 64, 64, 3)


def test_eval_order_and_padding(cfg):
  ds = loader.build(cfg, 'val')  # 8 images, batch 3 -> 3 batches, 1 padded
  batches = list(loader.eval_iterator(cfg, ds))
  assert len(batches) == 3
  for b in batches:
    assert b.keys() == KEYS.keys()
    assert b['image'].shape == (3, 96, 96, 3)
  valid = np.concatenate([b['valid'] for b in batches])
  ids = np.concatenate([b['image_id'] for b in batches])
  assert list(valid) == [True] * 8 + [False]
  assert list(ids[:8]) == list(ds.image_ids)
  assert ids[8] == -1
  last = batches[-1]
  assert not last['box_mask'][2].any() and (last['image'][2] == 0).all()
  # scores are 1 and boxes equal the raw ones normalised
  ex = ds[0]
  keep = ~ex['is_crowd']
  n = int(keep.sum())
  np.testing.assert_allclose(batches[0]['boxes'][0, :n],
                             ex['boxes'][keep][:8] / 64, atol=1e-6)
  assert (batches[0]['scores'][0][batches[0]['box_mask'][0]] == 1).all()
  # explicit batch size
  assert len(list(loader.eval_iterator(cfg, ds, batch_size=8))) == 1


def test_worker_processes_match_in_process(cfg):
  cfg.data.train_sizes = [64]
  ds = loader.build(cfg, 'train')
  local = _take(loader.train_iterator(cfg, ds, start_step=2), 4)
  cfg.data.num_workers = 2
  remote = _take(loader.train_iterator(cfg, ds, start_step=2), 4)
  assert all(_equal(x, y) for x, y in zip(local, remote))
  assert all(type(v) is np.ndarray for v in remote[0].values())


def test_coco_tiny_smoke(coco_tiny_dir, data_config):
  cfg = data_config(coco_tiny_dir, **{'data.max_size': 128,
                                      'train.batch_size': 2,
                                      'eval.batch_size': 32})
  ds = loader.build(cfg, 'train')
  b = _take(loader.train_iterator(cfg, ds), 1)[0]
  assert b['image'].shape[1] in (64, 96, 128)
  assert b['box_mask'].any()
  val = loader.build(cfg, 'val')
  batches = list(loader.eval_iterator(cfg, val))
  assert len(batches) == 3
  assert np.concatenate([b['valid'] for b in batches]).sum() == 80
  assert all(b['image'].shape == (32, 128, 128, 3) for b in batches)
  orig = np.concatenate([b['orig_size'] for b in batches])[:80]
  assert (orig == [[val[i]['height'], val[i]['width']] for i in range(80)]
          ).all()
