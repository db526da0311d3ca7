"""The R-CNN input pipeline: shape buckets, GT polygons and the mask
targets made from them, aspect-grouped
deterministic and resumable train batches, eval batches and padding, the eval
transform of user images."""
import pickle

import numpy as np
import pytest

from detx.data import loader, masks, pipelines
from detx.data.pipelines.rcnn import RcnnPipeline, RcnnTrainExample
from detx.data.transforms import rcnn as T
from tests.data.helpers import take

KEYS = dict(image=np.float32, image_hw=np.int32, scale=np.float32,
            boxes=np.float32, classes=np.int32, is_crowd=np.bool_,
            box_mask=np.bool_, orig_size=np.int32, image_id=np.int64,
            valid=np.bool_)


def test_buckets_and_max_size(data_config, tmp_path):
  cfg = data_config(tmp_path, **{'model.name': 'faster_rcnn',
                                 'eval.batch_size': 1})
  buckets = lambda *a, **k: RcnnPipeline(cfg).buckets(*a, **k)
  assert buckets() == [(800, 1344), (1344, 800)]
  cfg.data.pad_multiple = 128  # RetinaNet
  assert buckets() == [(896, 1408), (1408, 896)]
  cfg.eval.batch_size = 2  # eval batches may mix orientations
  assert buckets('train') == [(896, 1408), (1408, 896)]
  assert buckets() == [(896, 1408), (1408, 896), (1408, 1408)]
  assert buckets('eval', eval_batch_size=1) == [(896, 1408), (1408, 896)]
  with pytest.raises(ValueError, match='mode must be'):
    buckets('test')
  cfg.data.pad_multiple = 32
  cfg.eval.batch_size = 1
  # max_size: long side N, short side and buckets scale by N / 1333.
  cfg.data.max_size = 512
  assert T.capped_sizes(800, 1333, 512) == (307, 512, 512 / 1333)
  pipeline = RcnnPipeline(cfg)
  assert (pipeline.short_side, pipeline.long_side) == (307, 512)
  assert pipeline.settings['short_side'] == 307
  assert buckets() == [(320, 512), (512, 320)]
  cfg.data.buckets = [[800, 1344], [1344, 1344]]
  f = 512 / 1333
  assert buckets() == [
      (T.ceil_to(800 * f, 32), T.ceil_to(1344 * f, 32)),
      (T.ceil_to(1344 * f, 32), T.ceil_to(1344 * f, 32))] == [(320, 544),
                                                                (544, 544)]
  cfg.data.max_size = 2000  # larger than the zoo size: unchanged
  assert buckets() == [(800, 1344), (1344, 1344)]
  # Every resized image fits the default buckets.
  for h, w in [(480, 640), (640, 480), (100, 1000), (1000, 100), (500, 500)]:
    shape = T.resized_shape(h, w, 800, 1333)
    assert T.pick_bucket([shape], T.make_buckets(800, 1333)) == (
        (800, 1344) if w >= h else (1344, 800))
  with pytest.raises(ValueError, match='no shape bucket'):
    T.pick_bucket([(800, 1067), (1067, 800)], T.make_buckets(800, 1333))


@pytest.fixture
def cfg(coco_tiny_dir, data_config):
  return data_config(coco_tiny_dir, **{
      'model.name': 'faster_rcnn', 'data.max_size': 96, 'data.max_boxes': 40,
      'train.batch_size': 4, 'eval.batch_size': 3})


def test_masks_follow_the_model_family(cfg):
  """GT masks ride along for mask models only (the model contract, not a
  data key)."""
  ds = loader.build(cfg, 'val')
  for name, with_masks in (('faster_rcnn', False), ('cascade_rcnn', False),
                           ('retinanet', False), ('mask_rcnn', True)):
    cfg.model.name = name
    pipeline = pipelines.for_config(cfg)
    assert isinstance(pipeline, RcnnPipeline) and pipeline.with_masks == with_masks
    batch = next(iter(pipeline.eval_iterator(ds)))
    assert ('gt_polys' in batch) == with_masks
    assert ('gt_poly_ids' in pipeline.padding_example()) == with_masks


def test_mask_targets_from_coco_tiny(cfg):
  """The device's mask targets on coco_tiny's annotations (an image with crowd
  RLEs, flipped and not) against pycocotools frPyObjects / merge / decode of
  the annotation polygons, Paddle-flipped and moved into each RoI's frame in
  float32 as Polys2MaskWrtBox does; RoIs are the GT boxes, jittered."""
  import jax
  import jax.numpy as jnp
  from pycocotools import mask as mask_util
  from detx.ops.masks import polygon_mask_targets
  targets = jax.jit(polygon_mask_targets, static_argnums=(5, 6))
  cfg.model.name = 'mask_rcnn'
  cfg.data.keep_crowd = True
  ds = loader.build(cfg, 'train')
  index = int(np.flatnonzero(ds.image_ids == 262145)[0])  # has crowd RLEs
  ex = ds[index]
  pipeline = RcnnPipeline(cfg)
  n, crowd = len(ex['boxes']), ex['is_crowd']
  assert crowd.sum() >= 2
  rng = np.random.default_rng(0)
  for flip in (False, True):
    out = T.transform(ex, flip=flip, pad_shape=pipeline.buckets()[0],
                      **pipeline.settings)
    assert out['is_crowd'][:n].tolist() == crowd.tolist()
    assert ((out['gt_poly_ids'][:n] >= 0).any(axis=1) == ~crowd).all()
    real = ~crowd
    boxes = out['boxes'][:n][real]
    wh = boxes[:, 2:] - boxes[:, :2]
    rois = boxes + rng.uniform(-0.15, 0.15, boxes.shape) * np.tile(wh, 2)
    scale = out['scale']
    for m in (14, 28):
      got = np.asarray(targets(
          jnp.asarray(out['gt_polys'])[None], jnp.asarray(out['gt_poly_ids'])[None],
          jnp.asarray(out['box_mask'] & ~out['is_crowd'])[None],
          jnp.asarray(rois, jnp.float32)[None], jnp.asarray([scale]), m, 64))[0]
      segs = [masks.parse(ex['segmentation'][k]) for k in np.flatnonzero(real)]
      for r, seg in enumerate(segs):
        # The jitter keeps each RoI on its own instance (checked by the match).
        box = (rois[r].astype(np.float32) / np.float32(scale)).astype(np.float32)
        w = max(np.float32(box[2] - box[0]), np.float32(1))
        h = max(np.float32(box[3] - box[1]), np.float32(1))
        polys = []
        for p in seg:
          p = np.asarray(p, np.float64).reshape(-1, 2)
          if flip:
            p[:, 0] = ex['width'] - p[:, 0] - 1
          p = p.astype(np.float32)
          x = (p[:, 0] - box[0]) * np.float32(m) / w
          y = (p[:, 1] - box[1]) * np.float32(m) / h
          polys.append(np.stack([x, y], 1).astype(np.float64).reshape(-1).tolist())
        want = masks._decode_rle(mask_util.merge(mask_util.frPyObjects(polys, m, m)))
        np.testing.assert_array_equal(got[r], want, err_msg=f'flip {flip} roi {r} M {m}')
  # Without keep_crowd the crowd boxes (and their polygons) are gone.
  cfg.data.keep_crowd = False
  pipeline = RcnnPipeline(cfg)
  out = T.eval_example(ex, pad_shape=pipeline.buckets()[0], **pipeline.settings)
  assert out['box_mask'].sum() == n - ex['is_crowd'].sum()
  assert not out['is_crowd'].any()
  assert ((out['gt_poly_ids'] >= 0).any(axis=1) == out['box_mask']).all()


def test_grouping_deterministic_and_resumable(cfg):
  ds = loader.build(cfg, 'train')
  sizes = ds.image_sizes
  assert sizes.shape == (80, 2)
  assert sizes[0].tolist() == list(ds[0]['image'].shape[:2])
  kw = dict(seed=0, batch_size=4, augment='full', shuffle=True,
            settings=RcnnPipeline(cfg).settings,
            buckets=RcnnPipeline(cfg).buckets('train'))
  fn = RcnnTrainExample(ds, **kw)
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
  again = pickle.loads(pickle.dumps(RcnnTrainExample(ds, **kw)))
  for step in (0, 5, k - 1, k, 3 * k + 2):
    np.testing.assert_array_equal(fn.batch_records(step),
                                  again.batch_records(step))
  other = RcnnTrainExample(ds, **dict(kw, seed=1))
  assert not np.array_equal(fn.epoch_batches(0), other.epoch_batches(0))
  # Iterator: shared bucket per batch, deterministic, exact resume.
  batches = take(RcnnPipeline(cfg).train_iterator(ds), 4)
  buckets = RcnnPipeline(cfg).buckets('train')
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
  resumed = take(RcnnPipeline(cfg).train_iterator(ds, start_step=2), 2)
  for a, b in zip(batches[2:], resumed):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_eval_batches(cfg):
  # coco_tiny val's first 22 images in batches of 3 give landscape-only,
  # mixed, portrait-only batches and a last batch with 2 padding elements.
  cfg.eval.limit = 22
  ds = loader.build(cfg, 'val')
  batches = list(RcnnPipeline(cfg).eval_iterator(ds))
  assert len(batches) == 8
  ids = np.concatenate([b['image_id'] for b in batches])
  assert ids[:22].tolist() == ds.image_ids.tolist() and (ids[22:] == -1).all()
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.tolist() == [True] * 22 + [False] * 2
  buckets = RcnnPipeline(cfg).buckets('eval')
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
  for b, is_land in zip(RcnnPipeline(cfg).eval_iterator(ds, batch_size=1), land):
    assert b['image'].shape[1:3] == ((64, 96) if is_land else (96, 64))
    assert b['valid'].all()


def test_eval_batch_of_user_images_is_the_eval_transform(cfg):
  """eval_batch (predict, the benchmark) = the eval iterator's elements for the
  same decoded images (without ground truth), sharing the smallest bucket that
  holds them."""
  cfg.eval.limit = 22  # landscape and portrait images
  ds = loader.build(cfg, 'val')
  pipeline = RcnnPipeline(cfg)
  land = ds.image_sizes[:, 1] >= ds.image_sizes[:, 0]
  i, j = int(np.flatnonzero(land)[0]), int(np.flatnonzero(~land)[0])
  refs = list(pipeline.eval_iterator(ds, batch_size=1))
  for index in (i, j):
    one = pipeline.eval_batch([ds[index]['image']])
    assert one['image_id'].tolist() == [0]
    assert one.keys() == refs[index].keys() and not one['box_mask'].any()
    for k in ('image', 'image_hw', 'scale', 'orig_size', 'valid'):
      np.testing.assert_array_equal(one[k], refs[index][k], err_msg=k)
  mixed = pipeline.eval_batch([ds[i]['image'], ds[j]['image']], batch_size=3)
  assert mixed['image'].shape[:3] == (3, 96, 96)  # the square bucket
  assert mixed['valid'].tolist() == [True, True, False]
  for k, dtype in KEYS.items():
    assert mixed[k].dtype == dtype, k
  with pytest.raises(ValueError, match='uint8'):
    pipeline.eval_batch([ds[i]['image'].astype(np.float32)])
