"""Packaging (issue 20, item 5): configs resolve by bare name (`--config=quickstart`)
as well as by path; the metadata's version ranges admit the lock file's pins; and, slow,
a wheel built from this checkout, installed in a fresh virtualenv, trains and evaluates
the quickstart from a directory outside the clone."""
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
