"""Faults: non-finite steps are skipped and counted; signals and kills never lose work."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detx import evaluation, metrics, train
from tests.helpers import tiny_config
from tests.test_train import _final_params

ROOT = Path(__file__).resolve().parents[1]


def test_injected_nan_step_is_skipped_and_counted(tmp_path):
  c = tiny_config(tmp_path, steps=4, **{'train.inject_nan_steps': (2,)})
  train.train_and_evaluate(c, str(tmp_path / 'run'), do_eval=False)
  rows = {r['step']: r for r in metrics.read_metrics(tmp_path / 'run')}
  assert rows[1]['train/skipped_steps'] == 0
  assert rows[2]['train/skipped_steps'] == 1 and rows[2]['train/bad_steps'] == 1
  assert rows[4]['train/skipped_steps'] == 1 and rows[4]['train/bad_steps'] == 0
  assert np.isfinite(rows[4]['train/loss'])


def test_repeated_faults_stop_with_the_last_good_checkpoint(tmp_path):
  c = tiny_config(tmp_path, steps=10, **{'train.inject_nan_steps': tuple(range(3, 11)),
      'train.max_bad_steps': 3, 'train.checkpoint_every': 2})
  good = tiny_config(tmp_path, steps=10, **{'train.stop_at': 2})  # same schedule
  train.train_and_evaluate(good, str(tmp_path / 'good'), do_eval=False)
  with pytest.raises(FloatingPointError, match='3 consecutive non-finite steps at step 5'):
    train.train_and_evaluate(c, str(tmp_path / 'run'), do_eval=False)
  latest, step = _final_params(c, tmp_path / 'run')
  reference, _ = _final_params(good, tmp_path / 'good')
  assert step == 4  # saved while steps 3-4 were skipped: parameters are step 2's
  for k in reference:
    np.testing.assert_array_equal(latest[k], reference[k])


def test_a_failing_evaluation_keeps_the_final_checkpoint(tmp_path, monkeypatch):
  """The final checkpoint is saved asynchronously; an error raised after it (here by the
  evaluation) must still let the save commit, or a process exiting on that error loses it."""
  from detx import checkpoint
  closed = []
  real_close = checkpoint.Checkpointer.close

  def close(self):
    real_close(self)
    closed.append(self.latest_step())

  def broken_eval(*args, **kwargs):
    raise RuntimeError('evaluation failed')

  monkeypatch.setattr(checkpoint.Checkpointer, 'close', close)
  monkeypatch.setattr(evaluation, 'evaluate', broken_eval)
  c = tiny_config(tmp_path, steps=3)
  with pytest.raises(RuntimeError, match='evaluation failed'):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert closed == [3]  # waited for the step-3 save before the error left the loop
  assert (tmp_path / 'run' / 'checkpoints' / '3').is_dir()


def _main_cmd(workdir, data_dir, cache_dir, *extra):
  return [sys.executable, '-m', 'detx.main', '--config=configs/quickstart.py',
          f'--workdir={workdir}', f'--config.data.dir={data_dir}',
          f'--config.data.cache_dir={cache_dir}', '--config.model.backbone.depths=(1,1,1,1,1)',
          '--config.model.backbone.width=0.125', '--config.data.train_sizes=(64,)',
          '--config.eval.size=64', '--config.train.batch_size=4', '--config.data.max_boxes=8',
          '--config.train.log_every=1', *extra]


def _wait_for(predicate, proc, timeout=300):
  t0 = time.time()
  while not predicate():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - t0 < timeout
    time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_it_stopped(tmp_path):
  tiny_config(tmp_path)  # generates tmp_path/shapes
  workdir = tmp_path / 'run'
  cmd = _main_cmd(workdir, tmp_path / 'shapes', tmp_path / 'tfds',
                  '--config.train.steps=100000', '--config.train.checkpoint_every=100000',
                  '--mode=train')
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: len(metrics.read_metrics(workdir)) >= 3, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 0
  steps = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  last_logged = metrics.read_metrics(workdir)[-1]['step']
  assert steps == [last_logged] and 3 <= last_logged < 100000


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
  """SIGKILL mid-run (after the step-6 checkpoint, ~24 steps / ~5 s before the end),
  then a resume reaches the uninterrupted run's parameters. The test shows the kill
  landed: the process died of the signal, its latest checkpoint is below train.steps,
  and the resume restored that checkpoint (not a fresh start, which would match too)."""
  import re
  steps = 30
  tiny_config(tmp_path)
  args = (tmp_path / 'shapes', tmp_path / 'tfds', f'--config.train.steps={steps}',
          '--config.train.checkpoint_every=3', '--mode=train')
  whole, killed = tmp_path / 'whole', tmp_path / 'killed'
  subprocess.run(_main_cmd(whole, *args), cwd=ROOT, check=True, capture_output=True)
  proc = subprocess.Popen(_main_cmd(killed, *args), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: (killed / 'checkpoints' / '6').is_dir(), proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, f'exited by itself ({proc.returncode}), not killed'
  saved = [int(p.name) for p in (killed / 'checkpoints').iterdir() if p.name.isdigit()]
  latest = max(saved)
  assert 6 <= latest < steps, f'killed after its last step: checkpoints {sorted(saved)}'
  resumed = subprocess.run(_main_cmd(killed, *args), cwd=ROOT, check=True, capture_output=True,
                           text=True)
  found = re.findall(r'detx: resumed from \S*?(\d+)\s', resumed.stdout + resumed.stderr)
  assert found == [str(latest)], (found, latest)
  c = tiny_config(tmp_path)
  a, step_a = _final_params(c, whole)
  b, step_b = _final_params(c, killed)
  assert step_a == step_b == steps
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
