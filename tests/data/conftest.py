"""Fixtures of the data tests (the shared ones are in tests/conftest.py)."""
import shutil

import pytest


@pytest.fixture
def broken(shapes_dir, tmp_path):
  """A private copy of the small shapes dataset to break."""
  out = tmp_path / 'broken'
  shutil.copytree(shapes_dir, out)
  return out


@pytest.fixture
def shapes_config(shapes_dir, data_config):
  """YOLO batches of the small shapes dataset: sizes 64-128, 8 boxes, train
  batch 4, eval batch 3 at 96, mixup in the first 2 epochs."""
  return data_config(shapes_dir, **{
      'data.train_sizes': [64, 96, 128], 'data.max_boxes': 8,
      'train.batch_size': 4, 'eval.size': 96, 'eval.batch_size': 3,
      'data.mixup_epochs': 2})
