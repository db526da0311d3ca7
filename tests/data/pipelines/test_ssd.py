"""The SSD input pipeline on the shapes dataset: batch format, determinism and resume,
eval order and padding, the eval transform of user images, data.max_size."""
import numpy as np
import pytest

from detx.data import loader, pipelines
from detx.data.pipelines import SsdPipeline
from tests.data.helpers import equal, take


@pytest.fixture
def cfg(shapes_dir, data_config):
  c = data_config(shapes_dir, **{'model.name': 'ssd', 'data.max_boxes': 8,
                                 'train.batch_size': 4, 'eval.batch_size': 3})
  c.data.image_size = 48
  return c


def test_train_batches(cfg):
  assert isinstance(pipelines.for_config(cfg), SsdPipeline)
  ds = loader.build(cfg, 'train')
  a = take(SsdPipeline(cfg).train_iterator(ds), 3)
  for b in a:
    assert b['image'].shape == (4, 48, 48, 3) and b['image'].dtype == np.float32
    assert b['boxes'].shape == (4, 8, 4) and b['box_mask'].shape == (4, 8)
    m = b['box_mask']
    assert ((b['boxes'][m] >= 0) & (b['boxes'][m] <= 1)).all()
    assert np.abs(b['image']).max() <= 1.0 + 1e-6
  resumed = take(SsdPipeline(cfg).train_iterator(ds, start_step=1), 2)
  assert all(equal(x, y) for x, y in zip(a[1:], resumed))
  assert SsdPipeline(cfg).train_shapes() == [(48, 48)]


def test_eval_batches_and_user_images(cfg):
  ds = loader.build(cfg, 'val')
  batches = list(SsdPipeline(cfg).eval_iterator(ds))
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.sum() == ds.num_images and len(valid) % 3 == 0
  user = SsdPipeline(cfg).eval_batch([np.zeros((20, 30, 3), np.uint8)], batch_size=2)
  assert user['image'].shape == (2, 48, 48, 3) and list(user['valid']) == [True, False]
  assert tuple(user['orig_size'][0]) == (20, 30)
  cfg.data.max_size = 32
  assert SsdPipeline(cfg).padding_example()['image'].shape == (32, 32, 3)
