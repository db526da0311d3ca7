"""The reference side of the parity tier: PaddleDetection 2.6 (module ppdet) in its own
virtualenv, driven through files.

ppdet pins numpy<1.24, so it cannot share detx's environment. `ppdet_python()` makes
(once, under a lock) a venv with PPDET_REQUIREMENTS at $DETX_PPDET_VENV, default
<repo>/.venv-ppdet (git-ignored), and returns its python; where the venv cannot be made
(no numpy 1.23.5 wheel for this Python, no package index) the calling test skips with
one line. `run_ppdet(script, spec, outdir)` runs one of this folder's ppdet-side scripts
in that venv: the script reads spec.json and writes .npz files into outdir.

Neither paddle nor ppdet is ever imported by detx or by detx's test process.
"""
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PPDET_REQUIREMENTS = ('paddlepaddle==3.3.1', 'paddledet==2.6.0', 'numpy==1.23.5',
                      'scikit-learn')
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _venv_dir() -> Path:
  return Path(os.environ.get('DETX_PPDET_VENV', REPO / '.venv-ppdet'))


def ppdet_python() -> str:
  """The ppdet venv's python (made on first use); skips the test where it cannot be."""
  venv = _venv_dir()
  python = venv / 'bin' / 'python'
  stamp = venv / 'detx-ready.json'
  want = json.dumps(list(PPDET_REQUIREMENTS))
  venv.parent.mkdir(parents=True, exist_ok=True)
  with open(str(venv) + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if stamp.is_file() and stamp.read_text() == want and python.is_file():
      return str(python)
    base = 'python3.11' if sys.version_info[:2] != (3, 11) and _has('python3.11') else sys.executable
    made = subprocess.run([base, '-m', 'venv', '--clear', str(venv)], capture_output=True,
                          text=True)
    if made.returncode == 0:
      made = subprocess.run([str(python), '-m', 'pip', 'install', '-q', *PPDET_REQUIREMENTS],
                            capture_output=True, text=True)
    if made.returncode != 0:
      last = (made.stderr.strip().splitlines() or ['(no output)'])[-1]
      pytest.skip(f'parity tier: could not make the ppdet venv ({" ".join(PPDET_REQUIREMENTS)}) '
                  f'with {base}: {last}')
    stamp.write_text(want)
  return str(python)


def _has(cmd: str) -> bool:
  from shutil import which
  return which(cmd) is not None


def run_ppdet(script: str, spec, outdir: Path, timeout: int = 900) -> Path:
  """Run tests/parity/<script> in the ppdet venv with outdir/spec.json; returns outdir.
  A failing script fails the test with its last lines of stderr."""
  outdir = Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  (outdir / 'spec.json').write_text(json.dumps(spec))
  env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONPATH=str(HERE),
             FLAGS_call_stack_level='0', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
  proc = subprocess.run([ppdet_python(), str(HERE / script), str(outdir)], env=env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    tail = '\n'.join(proc.stderr.strip().splitlines()[-25:])
    pytest.fail(f'{script} failed in the ppdet venv (exit {proc.returncode}):\n{tail}')
  return outdir


def assert_close(name: str, got, want, rel: float = 2e-4):
  """max |got - want| <= rel * max |want| (relative to the tensor's scale); returns the
  measured relative difference."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f'{name}: detx shape {got.shape}, ppdet {want.shape}'
  scale = float(np.max(np.abs(want))) or 1.0
  diff = float(np.max(np.abs(got - want))) / scale
  assert diff <= rel, f'{name}: max |detx - ppdet| / max |ppdet| = {diff:.3g} > {rel:g}'
  return diff
