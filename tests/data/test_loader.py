"""Datasets and the grain machinery: splits, limits, and worker processes
giving the same batches as in-process loading (float32 and uint8 images)."""
import copy
import errno

import numpy as np
import pytest

from detx.config import override
from detx.data import loader, pipelines, workers
from detx.errors import ConfigError
from detx.data.pipelines import YoloPipeline
from detx.data.transforms import STD
from detx.models import inputs
from tests.data.helpers import equal, take
from tests.data.loader_fns import Cases, Growing
from tests.helpers import assert_released, live_children, shm_objects, wait_until


@pytest.fixture
def cfg(shapes_config):
  return shapes_config


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
                        take(YoloPipeline(cfg).train_iterator(train), 4)])
  assert set(ids) <= {1, 2, 3, 4, 5}


# R-CNN pipelines on the 64x64 shapes: buckets 64x96 and 96x64.
RCNN_SIZES = {'data.short_side': 64, 'data.long_side': 96}


# (model.name, data.image_dtype) of the worker-equivalence test: every pipeline, uint8
# where it has one (SSD normalises itself and always sends float32).
WORKER_CASES = (('yolov3', 'float32'), ('yolov3', 'uint8'), ('faster_rcnn', 'float32'),
                ('faster_rcnn', 'uint8'), ('mask_rcnn', 'float32'), ('mask_rcnn', 'uint8'),
                ('ssd', 'float32'))


def test_worker_processes_match_in_process(cfg):
  """The same batches for the same seed and step in-process and in 2 worker processes
  (detx.data.workers): the YOLO, R-CNN, mask and SSD pipelines' train functions, float32
  and uint8 images, through loader.train_batches from step 2 (3 batches of 4)."""
  fns = {}
  for name, dtype in WORKER_CASES:
    c = copy.deepcopy(cfg)
    override(c, {'model.name': name, 'data.image_dtype': dtype, 'data.train_sizes': [64],
                 **(RCNN_SIZES if 'rcnn' in name else {})})
    c.data.image_size = 48  # SSD's
    fns[f'{name}/{dtype}'] = pipelines.for_config(c).train_example(loader.build(c, 'train'))
  local = take(loader.train_batches(Cases(fns), 4, 2, num_workers=0), 3)
  it = loader.train_batches(Cases(fns), 4, 2, num_workers=2)
  assert isinstance(it._it, workers.WorkerPool)  # pylint: disable=protected-access
  remote = take(it, 3)
  assert len(remote) == 3 and all(equal(x, y) for x, y in zip(local, remote))
  assert all(type(v) is np.ndarray for v in remote[0].values())
  for name, dtype in WORKER_CASES:
    assert remote[0][f'{name}/{dtype}/image'].dtype == np.dtype(dtype)
  assert 'mask_rcnn/uint8/gt_polys' in remote[0] and 'faster_rcnn/uint8/gt_polys' not in remote[0]


def test_worker_eval_batches_errors_and_release():
  """Eval batches in 2 and 3 workers: equal to in-process and ending with the split, also
  when batches outgrow the shared-memory slots; a worker's error reaches the caller as
  its own exception at its batch; either way no worker process or /dev/shm object stays."""
  shm_before = shm_objects()
  local = list(loader.eval_batches(Growing(), 10, 2, num_workers=0))
  remote = list(loader.eval_batches(Growing(), 10, 2, num_workers=2))
  assert len(local) == len(remote) == 5 and all(equal(x, y) for x, y in zip(local, remote))
  it = loader.eval_batches(Growing(fail=8), 10, 2, num_workers=3)  # batch 4: worker 1
  assert all(equal(next(it), x) for x in local[:4])
  with pytest.raises(ValueError, match='bad element 8'):
    next(it)
  assert wait_until(lambda: not live_children(), 10), live_children()
  assert_released(shm_before, timeout=10)


def test_worker_slots_reused_grown_and_a_full_dev_shm(monkeypatch):
  """A worker's slot is reused while a batch fits and replaced by a larger one when it
  does not; a /dev/shm without room is one ConfigError line, its segment unlinked."""
  w = workers._Worker(b'', 0, 1, 2, 'test')  # pylint: disable=protected-access
  first = w.slot_for(0, 1000)
  assert w.slot_for(0, 1100) is first and first.size >= 1100
  bigger = w.slot_for(0, 5000)
  assert bigger is not first and bigger.size >= 5000
  for shm in (first, bigger):
    workers._release(shm)  # pylint: disable=protected-access

  def full(*args):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(workers.os, 'posix_fallocate', full)
  with pytest.raises(ConfigError, match='/dev/shm has no room for a 1 MB loader batch'):
    w.slot_for(1, 10 ** 6)
  assert 1 not in w.mem and not [n for n in shm_objects() if n.startswith('detx_test_')]


@pytest.mark.parametrize('name', ['faster_rcnn', 'mask_rcnn', 'yolov3'])
def test_uint8_images_match_float_path(coco_tiny_dir, data_config, name):
  """data.image_dtype='uint8' (normalised by the model, detx.models.inputs.normalize)
  against the float32 path on coco_tiny train (flips, YOLO's full augmentation) and eval
  elements, zoo sizes: every other field equal; R-CNN (which normalises before resizing)
  within half an intensity level (x/255 units, i.e. |difference| x std), YOLO (which
  normalises the resized uint8 image) to float32 rounding."""
  out = {}
  for dtype in ('float32', 'uint8'):
    cfg = data_config(coco_tiny_dir, **{'model.name': name, 'data.image_dtype': dtype,
                                        'train.batch_size': 2, 'data.train_sizes': [416],
                                        'data.mixup_epochs': 1})
    ds = loader.build(cfg, 'train')
    pipe = pipelines.for_config(cfg)
    train, evals = pipe.train_example(ds), pipe.eval_example(ds, 3)
    last = -(-ds.num_images // 3) * 3 - 1  # eval padding unless 3 divides the images
    out[dtype] = [train(i) for i in range(3)] + [evals(i) for i in (0, 1, last)]
  worst = 0.0
  for f, u in zip(out['float32'], out['uint8']):
    assert f.keys() == u.keys() and all(np.array_equal(f[k], u[k]) for k in f if k != 'image')
    assert u['image'].dtype == np.uint8 and f['image'].dtype == np.float32
    hw = u['image_hw'][None] if 'image_hw' in u else None
    image = np.asarray(inputs.normalize(u['image'][None], hw))[0]
    if not f['valid']:  # YOLO's eval padding: no image_hw, never read
      continue
    worst = max(worst, float((np.abs(image - f['image']) * STD).max()))
  if name == 'yolov3':
    assert worst < 1e-6
  else:
    assert 0 < worst <= 0.5 / 255 + 1e-5  # the bound is 1/255


def test_image_dtype_refused(cfg):
  cfg.data.image_dtype = 'float16'
  with pytest.raises(ValueError, match='image_dtype'):
    YoloPipeline(cfg)
