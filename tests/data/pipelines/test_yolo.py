"""The YOLOv3 input pipeline: batch format, determinism, resume, epochs and
mixup, eval order and padding, the eval transform of user images."""
import numpy as np
import pytest

from detx.data import loader
from detx.data.pipelines import YoloPipeline
from tests.data.helpers import equal, take

KEYS = dict(image=np.float32, boxes=np.float32, classes=np.int32,
            scores=np.float32, box_mask=np.bool_, image_id=np.int64,
            orig_size=np.int32, valid=np.bool_)


@pytest.fixture
def cfg(shapes_config):
  return shapes_config


def test_train_batch_format(cfg):
  ds = loader.build(cfg, 'train')
  for b in take(YoloPipeline(cfg).train_iterator(ds), 3):
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
  a = take(YoloPipeline(cfg).train_iterator(ds), 6)
  b = take(YoloPipeline(cfg).train_iterator(ds), 6)
  assert all(equal(x, y) for x, y in zip(a, b))
  resumed = take(YoloPipeline(cfg).train_iterator(ds, start_step=3), 3)
  assert all(equal(x, y) for x, y in zip(a[3:], resumed))
  # multi-scale: several sizes are drawn
  assert len({x['image'].shape[1] for x in a}) > 1
  cfg.seed = 1
  other = take(YoloPipeline(cfg).train_iterator(ds), 2)
  assert not equal(a[0], other[0])


def test_resize_path_goes_through_the_largest_size(cfg, monkeypatch):
  """Full augmentation resizes every image to max(train_sizes) (Paddle's 608)
  before the step's size; the step's size is drawn once per global batch."""
  import threading
  from detx.data.pipelines import yolo as P
  calls, me, real = [], threading.current_thread(), P.T.train_example

  def record(*a, **kw):  # other tests' loader threads may still be prefetching
    if threading.current_thread() is me:
      calls.append((a[1], kw['target_size']))
    return real(*a, **kw)
  monkeypatch.setattr(P.T, 'train_example', record)
  cfg.data.train_sizes = [64, 96, 128]
  fn = YoloPipeline(cfg).train_example(loader.build(cfg, 'train'))
  b = fn.batch_size
  for p in range(3 * b):
    assert fn(p)['image'].shape[0] == calls[-1][0]
  assert {t for _, t in calls} == {128}
  sizes = [s for s, _ in calls]
  assert all(len(set(sizes[i:i + b])) == 1 for i in range(0, 3 * b, b))


def test_epochs_and_mixup(cfg):
  ds = loader.build(cfg, 'train')  # 24 images, batch 4: 6 steps per epoch
  batches = take(YoloPipeline(cfg).train_iterator(ds), 18)
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
  cfg.data.augment = 'none'
  cfg.data.shuffle = False
  cfg.data.train_sizes = [96]
  ds = loader.build(cfg, 'train')
  train = take(YoloPipeline(cfg).train_iterator(ds), 2)
  cfg.eval.batch_size = 4
  cfg.eval.size = 96
  evals = take(YoloPipeline(cfg).eval_iterator(loader.build(cfg, 'train')), 2)
  # No augmentation: training batches equal the eval pipeline's, in order.
  for t, e in zip(train, evals):
    assert equal(t, e)
  assert list(train[0]['image_id']) == [1, 2, 3, 4]


def test_max_size_scales_sizes(cfg):
  cfg.data.max_size = 64
  cfg.data.train_sizes = [320, 416, 608]
  cfg.eval.size = 608
  assert YoloPipeline(cfg).train_sizes == [64]
  assert YoloPipeline(cfg).eval_size == 64
  ds = loader.build(cfg, 'val')
  b = take(YoloPipeline(cfg).eval_iterator(ds), 1)[0]
  assert b['image'].shape == (3, 64, 64, 3)


def test_eval_order_and_padding(cfg):
  ds = loader.build(cfg, 'val')  # 8 images, batch 3 -> 3 batches, 1 padded
  batches = list(YoloPipeline(cfg).eval_iterator(ds))
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
  assert len(list(YoloPipeline(cfg).eval_iterator(ds, batch_size=8))) == 1


def test_coco_tiny_smoke(coco_tiny_dir, data_config):
  cfg = data_config(coco_tiny_dir, **{'data.max_size': 128,
                                      'train.batch_size': 2,
                                      'eval.batch_size': 32})
  ds = loader.build(cfg, 'train')
  b = take(YoloPipeline(cfg).train_iterator(ds), 1)[0]
  assert b['image'].shape[1] in (64, 96, 128)
  assert b['box_mask'].any()
  val = loader.build(cfg, 'val')
  batches = list(YoloPipeline(cfg).eval_iterator(val))
  assert len(batches) == 3
  assert np.concatenate([b['valid'] for b in batches]).sum() == 80
  assert all(b['image'].shape == (32, 128, 128, 3) for b in batches)
  orig = np.concatenate([b['orig_size'] for b in batches])[:80]
  assert (orig == [[val[i]['height'], val[i]['width']] for i in range(80)]
          ).all()


def test_eval_batch_of_user_images_is_the_eval_transform(cfg):
  ds = loader.build(cfg, 'val')
  pipeline = YoloPipeline(cfg)
  ref = next(iter(pipeline.eval_iterator(ds)))
  batch = pipeline.eval_batch([ds[0]['image'], ds[1]['image']], batch_size=3)
  assert batch.keys() == KEYS.keys()
  assert batch['image_id'].tolist() == [0, 1, -1]
  assert batch['valid'].tolist() == [True, True, False]
  for k in ('image', 'orig_size'):
    np.testing.assert_array_equal(batch[k][:2], ref[k][:2], err_msg=k)
  assert not batch['box_mask'].any() and not batch['image'][2].any()
  pad = pipeline.padding_example()
  assert pad.keys() == KEYS.keys() and pad['image'].shape == (96, 96, 3)
  with pytest.raises(ValueError, match='do not fit'):
    pipeline.eval_batch([ds[0]['image']] * 2, batch_size=1)


def test_size_groups_draw_a_size_per_group_of_the_same_examples(cfg):
  """data.size_group 2 of a batch of 4: each step comes as two group batches, each at
  its own drawn size, holding the step's rows (same records, crops, flips) in order."""
  ds = loader.build(cfg, 'train')
  whole = take(YoloPipeline(cfg).train_iterator(ds), 6)
  cfg.data.size_group = 2
  pipe = YoloPipeline(cfg)
  assert (pipe.group_size, pipe.groups_per_step) == (2, 2)
  groups = take(pipe.train_iterator(ds), 12)
  for step, batch in enumerate(whole):
    a, b = groups[2 * step:2 * step + 2]
    for k in ('image_id', 'boxes', 'classes', 'box_mask', 'scores', 'orig_size'):
      np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), batch[k], err_msg=k)
    assert a['image'].shape[0] == b['image'].shape[0] == 2
  sizes = [g['image'].shape[1] for g in groups]
  assert set(sizes) <= {64, 96, 128}
  assert any(sizes[i] != sizes[i + 1] for i in range(0, 12, 2))  # a step of two sizes
  resumed = take(pipe.train_iterator(ds, start_step=3), 6)
  assert all(equal(x, y) for x, y in zip(groups[6:], resumed))


@pytest.mark.parametrize('overrides, message', [
    ({'data.size_group': 3}, 'data.size_group=3 must divide train.batch_size=4'),
    ({'data.size_group': 2, 'train.grad_accum': 2}, 'use one of them'),
    ({'data.size_group': 2, 'model.name': 'faster_rcnn'}, 'draws no train sizes'),
])
def test_bad_size_group_is_refused(cfg, overrides, message):
  from detx import config as config_lib
  from detx.data import pipelines
  from detx.errors import ConfigError
  c = config_lib.override(cfg, overrides)
  with pytest.raises(ConfigError, match=message):
    pipelines.for_config(c)


@pytest.mark.parametrize('group', [4, 8])
def test_size_group_of_the_whole_batch_or_more_is_one_size_per_step(cfg, group):
  cfg.data.size_group = group  # the batch is 4
  assert YoloPipeline(cfg).groups_per_step == 1


def test_size_group_must_divide_over_the_devices(cfg, monkeypatch):
  import jax
  from detx.errors import ConfigError
  monkeypatch.setattr(jax, 'device_count', lambda: 4)
  cfg.data.size_group = 2
  with pytest.raises(ConfigError, match='data.size_group=2 does not divide over the 4 devices'):
    YoloPipeline(cfg)
