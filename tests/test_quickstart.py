"""The README's first command, with fewer steps, trains and evaluates the quickstart."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detx import metrics

ROOT = Path(__file__).resolve().parents[1]


def readme_quickstart_command() -> list[str]:
  """The `python -m detx.main ...` part of the README's first command."""
  first = (ROOT / 'README.md').read_text().split('```bash', 1)[1].split('```', 1)[0]
  cmd = first.strip().split('&&')[-1].split()
  assert cmd[:3] == ['python', '-m', 'detx.main'], cmd
  return cmd


@pytest.mark.slow
def test_readme_quickstart_reduced_steps(tmp_path):
  cmd = readme_quickstart_command()
  cmd = [sys.executable] + cmd[1:]
  cmd = [a for a in cmd if not a.startswith('--workdir')] + [
      f'--workdir={tmp_path / "run"}',
      f'--config.data.dir={tmp_path / "shapes"}',   # generated here, not in ~/.cache
      f'--config.data.cache_dir={tmp_path / "tfds"}',
      '--config.train.steps=600']
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
  assert r.returncode == 0, r.stderr[-4000:]
  steps = [p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir() if p.name.isdigit()]
  assert '600' in steps
  evals = [m for m in metrics.read_metrics(tmp_path / 'run') if 'bbox/AP50' in m]
  assert evals and evals[-1]['bbox/AP50'] > 0.3, evals
