"""A second start of the same config loads its programs from the persistent cache."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detx import metrics
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_second_start_hits_the_compilation_cache(tmp_path):
  tiny_config(tmp_path)
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  rows = []
  for run in ('first', 'second'):
    cmd = [sys.executable, '-m', 'detx.main', '--config=configs/quickstart.py', '--mode=train',
           f'--workdir={tmp_path / run}', f'--config.data.dir={tmp_path / "shapes"}',
           f'--config.data.cache_dir={tmp_path / "tfds"}', f'--config.compile_cache={tmp_path / "jax"}',
           '--config.model.backbone.depths=(1,1,1,1,1)', '--config.model.backbone.width=0.125',
           '--config.data.train_sizes=(64,)', '--config.eval.size=64',
           '--config.train.batch_size=4', '--config.data.max_boxes=8', '--config.train.steps=2']
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    rows.append(metrics.read_metrics(tmp_path / run)[-1])
  first, second = rows
  assert first['jit/cache_hits'] == 0 and first['jit/compiles'] > 0
  assert second['jit/compiles'] == first['jit/compiles']
  assert second['jit/cache_hits'] >= first['jit/compiles'] - 1  # every program but trivial ones
