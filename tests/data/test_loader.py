"""Datasets and the grain machinery: splits, limits, and worker processes
giving the same batches as in-process loading."""
import numpy as np
import pytest

from detx.data import loader
from detx.data.pipelines import YoloPipeline
from tests.data.helpers import equal, take


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


def test_worker_processes_match_in_process(cfg):
  cfg.data.train_sizes = [64]
  ds = loader.build(cfg, 'train')
  local = take(YoloPipeline(cfg).train_iterator(ds, start_step=2), 4)
  cfg.data.num_workers = 2
  remote = take(YoloPipeline(cfg).train_iterator(ds, start_step=2), 4)
  assert all(equal(x, y) for x, y in zip(local, remote))
  assert all(type(v) is np.ndarray for v in remote[0].values())
