"""Result records: every figure the README quotes is a JSON file under experiments/results/
written by the script that measured it, with what is needed to reproduce and judge it.

  {"command": "python experiments/fits.py quickstart ...", "commit": "abc1234" (+ "-dirty"),
   "machine": {"platform": "cpu", "device_kind": "cpu", "devices": 1, "cpu_count": 2,
               "host": "...", "python": "3.11.9", "jax": "0.10.2"},
   "date": "2026-11-30T23:10:00Z", "values": {...}}
"""
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'experiments' / 'results'


def commit() -> str:
  """HEAD's short hash, '-dirty' when tracked files differ from it; 'unknown' outside git."""
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                           text=True, capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return head + ('-dirty' if dirty else '')


# CPU features that change which kernels XLA's CPU backend runs (and so the low bits
# of its results): a training run's metrics can differ between machines.
CPU_FEATURES = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16')


def cpu_info() -> dict:
  """The CPU's model name and which of CPU_FEATURES it has (Linux /proc/cpuinfo)."""
  try:
    text = Path('/proc/cpuinfo').read_text()
  except OSError:
    return {}
  info = dict(line.split(':', 1) for line in text.splitlines()[:40] if ':' in line)
  info = {k.strip(): v.strip() for k, v in info.items()}
  flags = set(info.get('flags', '').split())
  return {'cpu_model': info.get('model name', ''),
          'cpu_features': [f for f in CPU_FEATURES if f in flags]}


def machine() -> dict:
  import jax
  dev = jax.devices()[0]
  return {'platform': dev.platform, 'device_kind': dev.device_kind,
          'devices': jax.device_count(), 'cpu_count': os.cpu_count(),
          'host': platform.node(), 'processor': platform.processor() or platform.machine(),
          **cpu_info(), 'python': platform.python_version(), 'jax': jax.__version__}


def command(argv=None) -> str:
  """The command line that ran this script, as typed from the repository root."""
  argv = sys.argv if argv is None else argv
  script = Path(argv[0]).resolve()
  try:
    script = script.relative_to(ROOT)
  except ValueError:
    pass
  return shlex.join(['python', str(script)] + list(argv[1:]))


def write(path, values, argv=None) -> Path:
  """Writes the record (atomically) to PATH (relative paths: under experiments/results/)."""
  path = Path(path)
  if not path.is_absolute() and path.parent == Path('.'):
    path = RESULTS / path
  rec = {'command': command(argv), 'commit': commit(), 'machine': machine(),
         'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
         'values': values}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(rec, indent=2) + '\n')
  tmp.replace(path)
  return path


def read(path) -> dict:
  path = Path(path)
  if not path.is_absolute() and path.parent == Path('.'):
    path = RESULTS / path
  return json.loads(path.read_text())
