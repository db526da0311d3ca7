"""Shared pytest fixtures.

coco_tiny_dir  the real COCO 2017 subset at ../shared/data/coco_tiny beside the
               repo (80 train + 80 val images); tests using it skip when absent.
tmp_cache      a session-wide tfds cache dir (config.data.cache_dir), so each
               source directory is prepared once per test session.
shapes_dir     a small generated COCO-format shapes dataset (24 train + 8 val
               images, 64x64), session-wide and read-only by convention: copy
               it (shutil.copytree) before modifying it.

Every test process (and the subprocesses tests start) shares a persistent JAX
compilation cache, so the many tests that compile the same tiny models pay for
each program once. DETX_TEST_JAX_CACHE moves it; set it to '' to turn it off.
"""
import os
import tempfile
from pathlib import Path

import pytest

from tests.wheel_env import installed_wheel  # noqa: F401 (session: a wheel of the repo in a fresh venv)

_cache = os.environ.get('DETX_TEST_JAX_CACHE', str(Path(tempfile.gettempdir()) / 'detx_test_jax_cache'))
if _cache:
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _cache)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

COCO_TINY = Path(__file__).parents[1].parent / 'shared/data/coco_tiny'


def pytest_collection_modifyitems(config, items):
  """Tests marked `long` (slow ones that do not fit in CI's hour) skip unless
  DETX_LONG_TESTS=1; experiments/fits.py overfit sets it."""
  if os.environ.get('DETX_LONG_TESTS'):
    return
  skip = pytest.mark.skip(reason='long: set DETX_LONG_TESTS=1')
  for item in items:
    if item.get_closest_marker('long'):
      item.add_marker(skip)


@pytest.fixture(autouse=True)
def fit_record(request):
  """With DETX_FIT_RECORD=PATH (experiments/fits.py overfit sets it), every
  train.train_and_evaluate call of a test is timed and its final metrics are added to
  the record at PATH (experiments/record.py), keyed by the test's id; off otherwise."""
  path = os.environ.get('DETX_FIT_RECORD')
  if not path:
    yield
    return
  import time
  from detx import train
  runs, real = [], train.train_and_evaluate

  def timed(config, workdir, *args, **kwargs):
    t0 = time.time()
    result = real(config, workdir, *args, **kwargs)
    runs.append({'workdir': Path(workdir).name, 'model': config.model.name,
                 'steps': config.train.steps, 'data.max_size': config.data.max_size,
                 'seconds': round(time.time() - t0, 1),
                 'metrics': {k: round(float(v), 4) for k, v in result.items()
                             if k.split('/')[0] in ('bbox', 'segm', 'voc')
                             and k.count('/') == 1}})
    return result

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train, 'train_and_evaluate', timed)
    yield
  if runs:
    from experiments import record
    values = record.read(path)['values'] if Path(path).exists() else {}
    values[request.node.nodeid] = runs
    record.write(Path(path).resolve(), values)


@pytest.fixture(scope='session')
def coco_tiny_dir() -> Path:
  if not (COCO_TINY / 'annotations').is_dir():
    pytest.skip(f'real test data not found at {COCO_TINY}')
  return COCO_TINY


@pytest.fixture(scope='session')
def tmp_cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp('tfds_cache')


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory) -> Path:
  from detx.data import synthetic
  out = tmp_path_factory.mktemp('shapes') / 'shapes'
  return synthetic.generate(out, num_train=24, num_val=8, image_size=64,
                            seed=0)


@pytest.fixture
def data_config(tmp_cache):
  """make(data_dir, **overrides) -> detx.config.default() for that data dir and
  the session's tfds cache (tests.data.helpers.make_data_config: in-process
  loading, the yolov3 pipeline); overrides use dotted keys, e.g.
  make(d, **{'data.max_size': 128, 'model.name': 'faster_rcnn'})."""
  from tests.data.helpers import make_data_config
  return lambda data_dir, **overrides: make_data_config(data_dir, tmp_cache, **overrides)
