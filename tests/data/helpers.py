"""Helpers shared by the data tests."""
import itertools
import json
from pathlib import Path

import numpy as np


def make_data_config(data_dir, cache_dir, **overrides):
  """detx.config.default() with data.dir / data.cache_dir set, in-process
  loading (data.num_workers 0), model.name 'yolov3' (its pipeline) and YOLO's
  zoo train sizes and mixup, then `overrides` (dotted keys, e.g.
  {'data.max_size': 128, 'model.name': 'faster_rcnn'})."""
  from detx import config as cfg
  c = cfg.default()
  cfg.override(c, {
      'model.name': 'yolov3', 'data.dir': str(data_dir),
      'data.cache_dir': str(cache_dir), 'data.num_workers': 0,
      'data.train_sizes': tuple(range(320, 609, 32)), 'data.mixup_epochs': 250})
  return cfg.override(c, overrides)


def take(it, n):
  """The first `n` items of an iterator, which is then closed (workers stop)."""
  out = list(itertools.islice(it, n))
  close = getattr(it, 'close', None)
  if close:
    close()
  return out


def equal(a, b) -> bool:
  """Two batches with the same keys and equal arrays."""
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def edit_json(data_dir, fn, split='val'):
  """Applies fn to the split's annotation json in place; returns the json."""
  path = Path(data_dir) / f'annotations/instances_{split}2017.json'
  ann = read_json(path)
  fn(ann)
  path.write_text(json.dumps(ann))
  return ann


def build(data_config, data_dir, split='val', **overrides):
  from detx.data import loader
  return loader.build(data_config(data_dir, **overrides), split)


def no_prepared_data(cache) -> bool:
  return not list(Path(cache).rglob('dataset_info.json'))
