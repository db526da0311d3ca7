"""Small configs and data shared by the training tests."""
import numpy as np

from detx import config as cfg
from detx.data import synthetic


def tiny_config(tmp_path, steps=6, sizes=(64,), **overrides):
  """A very small YOLOv3 on a small generated shapes dataset under tmp_path."""
  data_dir = tmp_path / 'shapes'
  if not data_dir.exists():
    synthetic.generate(data_dir, num_train=24, num_val=8, image_size=64, seed=0)
  c = cfg.load('quickstart')
  c.model.backbone.depths = (1, 1, 1, 1, 1)
  c.model.backbone.width = 0.125
  c.data.dir = str(data_dir)
  c.data.cache_dir = str(tmp_path / 'tfds')
  c.data.train_sizes = tuple(sizes)
  c.data.max_boxes = 8
  c.eval.size = 64
  c.eval.batch_size = 4
  c.train.batch_size = 4
  c.train.steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = 3
  return cfg.override(c, overrides)


def flat_params(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}
