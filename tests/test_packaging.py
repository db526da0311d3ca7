"""Packaging (issue 20, item 5): configs resolve by bare name (`--config=quickstart`)
as well as by path; the metadata's version ranges admit the lock file's pins; and, slow,
a wheel built from this checkout, installed in a fresh virtualenv, trains and evaluates
the quickstart from a directory outside the clone."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from detx import cli, errors
from detx import config as cfg

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv):
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'a config', flag_values=fv)
  cli.parse(['prog', *argv], fv)
  return fv


@pytest.mark.parametrize('spec', [['--config=quickstart'], ['--config', 'quickstart'],
                                  ['--config=configs/quickstart.py']])
def test_a_bare_name_and_a_path_load_the_same_config(spec, monkeypatch):
  monkeypatch.chdir(ROOT)
  fv = _parse([*spec, '--config.train.steps=3'])
  assert fv.config.train.steps == 3 and fv.config.model.num_classes == 4
  assert fv.config.data.name == 'synthetic'
  assert Path(config_flags.get_config_filename(fv['config'])).resolve() == (
      cfg.CONFIG_DIR / 'quickstart.py').resolve()


def test_a_family_base_loads_by_name():
  assert cfg.load('_base/yolov3').model.name == 'yolov3'
  assert cfg.load('yolov3_darknet').model.backbone.name == 'darknet'


@pytest.mark.parametrize('spec, line', [
    ('quickstar', 'no config file quickstar; did you mean quickstart?'),
    ('faster_rcnn_r50_fpn', 'did you mean faster_rcnn_r50_fpn_2x, faster_rcnn_r50_fpn_1x or '),
    ('configs/quickstar.py', 'no config file configs/quickstar.py; did you mean configs/quickstart.py?'),
    ('zzzz', 'no config file zzzz; the configs are: cascade_rcnn_r50_fpn_1x, '),
])
def test_an_unknown_name_is_one_line_listing_close_matches(spec, line, monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(errors.PathError) as e:
    _parse([f'--config={spec}'])
  assert line in str(e.value) and '\n' not in str(e.value), str(e.value)
  with pytest.raises(FileNotFoundError):  # PathError is one, for the Python API's callers
    cfg.load(spec)


def _pyproject():
  return tomllib.loads((ROOT / 'pyproject.toml').read_text())


def _lock() -> dict:
  from packaging.utils import canonicalize_name
  pins = {}
  for line in (ROOT / 'requirements-lock.txt').read_text().splitlines():
    if line.strip() and not line.startswith('#'):
      name, version = line.split('==')
      pins[canonicalize_name(name)] = version.strip()
  return pins


def test_metadata_ranges_admit_the_locked_pins():
  """pyproject's dependencies are ranges (no exact pins, so a CUDA jax or a newer numpy
  stays), every one admits the version CI installs from requirements-lock.txt, and
  requirements.txt and .ci/run install with that lock as constraints."""
  from packaging.requirements import Requirement
  from packaging.utils import canonicalize_name
  project, pins = _pyproject()['project'], _lock()
  extras = [r for group in project['optional-dependencies'].values() for r in group]
  for text in project['dependencies'] + extras:
    req = Requirement(text)
    ops = {s.operator for s in req.specifier}
    assert '==' not in ops and '>=' in ops and '<' in ops, text
    name = canonicalize_name(req.name)
    if name in pins:
      assert req.specifier.contains(pins[name]), (text, pins[name])
    else:
      assert text in extras, f'{text} is not in requirements-lock.txt'
  assert '-c requirements-lock.txt' in (ROOT / 'requirements.txt').read_text().splitlines()
  assert '-r requirements.txt' in (ROOT / 'requirements-dev.txt').read_text().splitlines()
  ci = (ROOT / '.ci/run').read_text()
  assert 'pip install -q -c requirements-lock.txt -r requirements-dev.txt -e .' in ci
  assert 'jax[cuda12]' in project['optional-dependencies']['cuda12'][0]
  assert project['optional-dependencies']['tensorboard'][0].startswith('tensorboard>=')


def test_the_wheel_lists_every_package_and_the_configs():
  setuptools = _pyproject()['tool']['setuptools']
  on_disk = {'.'.join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / 'detx').rglob('__init__.py')}
  assert set(setuptools['packages']) == on_disk | {'detx.configs', 'detx.configs._base'}, (
      'pyproject.toml [tool.setuptools] packages must list every package under detx/')
  assert setuptools['package-dir'] == {'detx.configs': 'configs'}
  data = [p for d in ('detx', 'configs') for p in (ROOT / d).rglob('*')
          if p.is_file() and p.suffix not in ('.py', '.pyc')]
  assert not data, f'{data}: the wheel ships .py files only; list these in package-data'
  assert not (ROOT / 'detx' / 'configs').exists()  # CONFIG_DIR is the repo's configs/ here
  assert cfg.CONFIG_DIR == ROOT / 'configs'


def test_license_and_notice():
  assert 'Apache License\n                           Version 2.0' in (ROOT / 'LICENSE').read_text()
  notice = (ROOT / 'NOTICE').read_text()
  assert 'PaddleDetection' in notice and 'Apache License, Version 2.0' in notice
  assert _pyproject()['project']['license'] == {'text': 'Apache-2.0'}


@pytest.mark.slow
def test_the_wheel_trains_and_evaluates_the_quickstart_outside_the_clone(
    installed_wheel, shapes_dir, tmp_cache, tmp_path):
  """The installed wheel (tests/wheel_env.py), run from a directory outside the clone
  with --config=quickstart: 2 training steps and the evaluation that ends the run (the
  notebook test runs --mode=eval with the same wheel)."""
  from detx import metrics
  from tests.helpers import TINY_ARGS
  assert not tmp_path.resolve().is_relative_to(ROOT)
  env = installed_wheel.env()
  where = subprocess.run([str(installed_wheel.python), '-c',
                          'import detx.config as c; print(c.CONFIG_DIR)'],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
  assert Path(where.stdout.strip()) == (
      installed_wheel.prefix / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}'
      / 'site-packages' / 'detx' / 'configs')
  workdir = tmp_path / 'run'
  argv = [str(installed_wheel.python), '-m', 'detx.main', '--config=quickstart',
          f'--workdir={workdir}', f'--config.data.dir={shapes_dir}',
          f'--config.data.cache_dir={tmp_cache}', *TINY_ARGS, '--config.train.steps=2',
          '--config.eval.limit=4',
          f'--config.compile_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}']
  r = subprocess.run([*argv, '--mode=train_and_eval'], cwd=tmp_path, env=env,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  rows = metrics.read_metrics(workdir)
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2]
  assert any('bbox/AP50' in r and r['step'] == 2 for r in rows), rows
