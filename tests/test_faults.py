"""Faults: non-finite steps are skipped and counted; signals and kills never lose work;
a run that stops (an error, train.max_bad_steps, SIGTERM) with loader workers on leaves
no worker process or shared memory behind."""
import os
import uuid
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detx import evaluation, metrics, train
from tests.helpers import (assert_released, live_children, shm_objects, tiny_argv,
                           tiny_config, wait_until)
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
  evaluation) must still let the save commit, or a process exiting on that error loses it.
  The loader's two worker processes and their shared memory are released before the
  error leaves train_and_evaluate (its frames, kept alive by the traceback, used to hold
  them until interpreter exit)."""
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
  c = tiny_config(tmp_path, steps=3, **{'data.num_workers': 2})
  shm_before = shm_objects()
  with pytest.raises(RuntimeError, match='evaluation failed') as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert closed == [3]  # waited for the step-3 save before the error left the loop
  assert (tmp_path / 'run' / 'checkpoints' / '3').is_dir()
  assert e.traceback  # the frames are alive, as they are while an uncaught error exits
  assert wait_until(lambda: not live_children(), 10), live_children()
  assert_released(shm_before, timeout=10)


def _main_cmd(workdir, data_dir, cache_dir, *extra):
  return [sys.executable, '-m', 'detx.main', *tiny_argv(workdir, data_dir, cache_dir, *extra)]


def _marked_env():
  """(env, marker): the environment of a subprocess whose processes (loader workers
  too) helpers.marked_processes finds by the marker."""
  marker = uuid.uuid4().hex
  return dict(os.environ, DETX_TEST_MARK=marker), marker


def _wait_for(predicate, proc, timeout=300):
  t0 = time.time()
  while not predicate():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - t0 < timeout
    time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_it_stopped(tmp_path):
  """With two loader workers, SIGTERM sent to the whole process group (as a scheduler
  or Ctrl-C does: the workers get it too and leave it to the main process): the run
  checkpoints and exits 0, and neither its workers nor their shared memory outlive it."""
  tiny_config(tmp_path)  # generates tmp_path/shapes
  workdir = tmp_path / 'run'
  cmd = _main_cmd(workdir, tmp_path / 'shapes', tmp_path / 'tfds',
                  '--config.train.steps=100000', '--config.train.checkpoint_every=100000',
                  '--config.data.num_workers=2', '--mode=train')
  env, marker = _marked_env()
  shm_before = shm_objects()
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, start_new_session=True)
  _wait_for(lambda: len(metrics.read_metrics(workdir)) >= 3, proc)
  os.killpg(proc.pid, signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  steps = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  last_logged = metrics.read_metrics(workdir)[-1]['step']
  assert steps == [last_logged] and 3 <= last_logged < 100000
  assert 'leaked' not in err and 'Traceback' not in out + err, err[-3000:]
  assert_released(shm_before, marker)


@pytest.mark.slow
def test_max_bad_steps_stops_with_one_line_and_releases_the_loader(tmp_path):
  """train.max_bad_steps stops the run (two loader workers on) with one line on stderr
  and exit code 2, no traceback, no leaked shared memory ("resource_tracker: There
  appear to be N leaked shared_memory objects" was its last line), no process left."""
  tiny_config(tmp_path)
  workdir = tmp_path / 'run'
  cmd = _main_cmd(workdir, tmp_path / 'shapes', tmp_path / 'tfds', '--config.train.steps=20',
                  '--config.train.inject_nan_steps=(3,4,5,6,7,8,9,10)',
                  '--config.train.max_bad_steps=3', '--config.train.checkpoint_every=2',
                  '--config.data.num_workers=2', '--mode=train')
  env, marker = _marked_env()
  shm_before = shm_objects()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert r.returncode == 2, r.stderr[-3000:]
  assert 'Traceback' not in r.stdout + r.stderr and 'leaked' not in r.stderr, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('detx: 3 consecutive non-finite steps at step 5'), last
  assert (workdir / 'checkpoints' / '4').is_dir()  # the last good checkpoint is kept
  assert_released(shm_before, marker)


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
