"""Fixtures of the weight tests.

paddle_files  a directory of Paddle 1.x files written by paddlepaddle (see
              tests/weights/helpers.py), session-wide; skips without paddlepaddle.
"""
import importlib.util

import pytest

from tests.weights.helpers import run_paddle


@pytest.fixture(scope='session')
def paddle_files(tmp_path_factory):
  if importlib.util.find_spec('paddle') is None:
    pytest.skip('paddlepaddle not installed')
  d = tmp_path_factory.mktemp('paddle_written')
  run_paddle(d, 'write')
  return d
