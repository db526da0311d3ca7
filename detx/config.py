"""The standard config every detx config derives from, and a loader for configs/*.py.

Configs are plain Python: `configs/<name>.py` defines `get_config()` returning an
`ml_collections.ConfigDict`; a zoo config loads its base with `load()` and overrides
only what differs. Standard keys (DESIGN.md): data.dir, data.train_split,
data.train_limit, data.max_size, eval.split, eval.limit, train.steps,
train.batch_size, train.stop_at, train.log_every, train.checkpoint_every, eval.every, seed.
"""
import importlib.util
from pathlib import Path
from typing import Any, Mapping

import ml_collections

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = dict(name='', num_classes=80, dtype='float32', remat=False, pretrained='')
  c.data = dict(
      name='coco', dir='', train_split='train', train_limit=0, max_size=0,
      max_boxes=50, num_workers=2, train_sizes=(608,), mixup_epochs=0,
      augment='full', cache_dir='', shuffle=True, bad_boxes='error',
      exif='ignore', bad_images='error', empty_images='keep')
  c.eval = dict(split='val', limit=0, size=608, batch_size=8, every=0, draw_images=4)
  c.train = dict(steps=1000, batch_size=8, stop_at=0, log_every=20,
                 checkpoint_every=500, keep_checkpoints=3, max_bad_steps=20,
                 best_metric='bbox/AP', inject_nan_steps=(),
                 param_sharding='replicated', grad_accum=1)
  c.optim = dict(base_lr=0.001, momentum=0.9, weight_decay=0.0, clip_norm=0.0)
  c.compile_cache = '~/.cache/detx/jax'  # JAX persistent compilation cache; '' = off
  return c


def load(name_or_path: str) -> ml_collections.ConfigDict:
  """Loads `configs/<name>.py` (or a path) and returns its get_config()."""
  path = Path(name_or_path)
  if not path.suffix:
    path = CONFIG_DIR / f'{name_or_path}.py'
  if not path.is_file():
    raise FileNotFoundError(f'no config file {path}')
  spec = importlib.util.spec_from_file_location(f'detx_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any]):
  """Sets dotted keys in place, e.g. override(c, {'data.max_size': 128}); returns config.
  A missing parent raises KeyError (ml_collections suggests close names)."""
  for key, value in values.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
