"""The README's first command, with fewer steps, trains and evaluates the quickstart;
bf16 evaluates its weights as float32 does, and trains.

How well bf16 trains against float32 (three seeds of 800 steps each, medians) is measured
by `python experiments/fits.py quickstart` and saved in
experiments/results/quickstart_bf16_cpu.json; six such runs do not fit in CI.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detx import metrics
from experiments import fits

ROOT = Path(__file__).resolve().parents[1]
STEPS = 800              # of the quickstart's 1500


def readme_quickstart_command() -> list[str]:
  """The `python -m detx.main ...` part of the README's first command."""
  first = (ROOT / 'README.md').read_text().split('```bash', 1)[1].split('```', 1)[0]
  cmd = first.strip().split('&&')[-1].split()
  assert cmd[:3] == ['python', '-m', 'detx.main'], cmd
  return cmd


def _run(tmp, workdir, *extra, steps=STEPS):
  cmd = [sys.executable] + readme_quickstart_command()[1:]
  cmd = [a for a in cmd if not a.startswith('--workdir')] + [
      f'--workdir={workdir}',
      f'--config.data.dir={tmp / "shapes"}',   # generated here, not in ~/.cache
      f'--config.data.cache_dir={tmp / "tfds"}',
      f'--config.train.steps={steps}', '--config.train.log_every=10', *extra]
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
  assert r.returncode == 0, r.stderr[-4000:]
  return metrics.read_metrics(workdir)


@pytest.fixture(scope='module')
def f32_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('quickstart')
  return tmp, _run(tmp, tmp / 'f32')


@pytest.mark.slow
def test_readme_quickstart_reduced_steps(f32_run):
  tmp, rows = f32_run
  steps = [p.name for p in (tmp / 'f32' / 'checkpoints').iterdir() if p.name.isdigit()]
  assert str(STEPS) in steps
  evals = [m for m in rows if 'bbox/AP50' in m]
  # AP50 after 800 steps is chaotic: seed 0 read 0.509 on one CPU (6793456,
  # quickstart_bf16_55edd8b_cpu.json) and 0.145 on an AVX512-BF16 one (3032714,
  # quickstart_bf16_cpu.json; CI read 0.145 too at f4eb560), seeds 1 and 2 0.24-0.44 in
  # those records. So the floor is 0.1, with the loss: its mean at steps 750 and 800
  # under 0.75x its mean at 50 and 100 (0.63 / 0.46 / 0.47 for seeds 0 / 1 / 2 in the
  # metrics.jsonl of quickstart_bf16_cpu.json's float32 runs).
  assert evals and evals[-1]['bbox/AP50'] > 0.1, evals
  loss = {m['step']: m['train/loss'] for m in rows if 'train/loss' in m}
  assert loss[750] + loss[800] < 0.75 * (loss[50] + loss[100]), loss


@pytest.mark.slow
def test_bf16_evaluates_like_f32_and_trains(f32_run):
  tmp, f32_rows = f32_run
  f32 = [m for m in f32_rows if 'bbox/AP50' in m][-1]['bbox/AP50']
  # The same weights with bf16 compute: measured 0.5096 against 0.5095 (seed 0).
  bf16_eval = fits.eval_with_dtype(tmp / 'f32', 'bfloat16')['bbox/AP50']
  assert abs(bf16_eval - f32) <= 0.02, (f32, bf16_eval)
  # bf16 training follows float32's: the first 100 of the same 800 steps (stop_at: the
  # same schedule, seed, data and initial weights) against the float32 run's, mean
  # train/loss over the logged steps 50-100: measured 1.09 (seed 0, 55edd8b). The
  # record's runs (steps 50 and 100 only) read 1.08, 0.93 and 1.04 for seeds 0/1/2;
  # their 800-step AP50 is in experiments/results/quickstart_bf16_cpu.json.
  rows = _run(tmp, tmp / 'bf16', '--config.model.dtype=bfloat16', '--mode=train',
              '--config.train.stop_at=100')
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  # (No 'the loss fell' check on these 100 steps alone: logged every 10 steps, one batch
  # each, still in the schedule's warm-up, they read 39.7 at step 10 and 35.1 at 100.)
  assert len(losses) == 10 and all(map(math.isfinite, losses)), losses
  window = lambda rs: [r['train/loss'] for r in rs if 'train/loss' in r and 50 <= r['step'] <= 100]
  bf16_mean, f32_mean = (sum(w) / len(w) for w in (window(rows), window(f32_rows)))
  assert len(window(rows)) == 6 and bf16_mean <= 1.15 * f32_mean, (bf16_mean, f32_mean)
