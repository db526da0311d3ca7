"""experiments/record.py: every record names the CPU's model and the features that pick
XLA's CPU kernels (a chaotic training run's metrics differ between machines)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments import record  # noqa: E402


@pytest.mark.skipif(not Path('/proc/cpuinfo').exists(), reason='Linux /proc/cpuinfo only')
def test_machine_names_cpu_model_and_features():
  m = record.machine()
  assert m['cpu_model'], m
  assert set(m['cpu_features']) <= set(record.CPU_FEATURES)
  flags = set(Path('/proc/cpuinfo').read_text().split('flags', 1)[1].split('\n', 1)[0].split())
  assert ('avx2' in m['cpu_features']) == ('avx2' in flags)


def test_write_stamps_the_record(tmp_path):
  path = record.write(tmp_path / 'r.json', {'x': 1}, argv=['experiments/fits.py', '--a'])
  import json
  rec = json.loads(path.read_text())
  assert rec['values'] == {'x': 1} and rec['command'].startswith('python ')
  assert {'commit', 'date', 'machine'} <= set(rec)
