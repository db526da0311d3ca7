"""experiments/sweep.py: the grid parser and run names, the scheduler (with a fake
detx.main, fast), and a real two-run sweep of the tiny quickstart (slow)."""
import csv
import importlib.util
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'experiments' / 'sweep.py'
QUICKSTART = ROOT / 'configs' / 'quickstart.py'
TINY = ['model.backbone.depths=(1,1,1,1,1)', 'model.backbone.width=0.125', 'data.train_sizes=(64,)',
        'eval.size=64', 'eval.batch_size=4', 'train.batch_size=4', 'data.max_boxes=8',
        'train.steps=4', 'train.log_every=1']


def _load():
  spec = importlib.util.spec_from_file_location('detx_experiments_sweep', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep = _load()


def _summary(workdir):
  with open(workdir / 'summary.csv', newline='') as f:
    return {row['run']: row for row in csv.DictReader(f)}


# ------------------------------------------------------------ fast: parsing ---

def test_parse_grid_values_are_python_literals_in_order():
  grid = sweep.parse_grid(
      "optim.base_lr=[0.01, 2e-2]  train.batch_size=[8,16]\n"
      "data.train_sizes=[(96,), (96, 128)] model.dtype=['float32', \"bfloat16\"] "
      "data.shuffle=[True,False]")
  assert grid == {'optim.base_lr': [0.01, 0.02], 'train.batch_size': [8, 16],
                  'data.train_sizes': [(96,), (96, 128)], 'model.dtype': ['float32', 'bfloat16'],
                  'data.shuffle': [True, False]}
  runs = sweep.expand({'a.x': [1, 2], 'b.y': ['p', 'q', 'r']})
  assert runs[:4] == [{'a.x': 1, 'b.y': 'p'}, {'a.x': 1, 'b.y': 'q'}, {'a.x': 1, 'b.y': 'r'},
                      {'a.x': 2, 'b.y': 'p'}] and len(runs) == 6


@pytest.mark.parametrize('spec, message', [
    ('', 'empty'),
    ('   ', 'empty'),
    ('optim.base_lr', 'no "="'),
    ('optim.base_lr=0.01', 'must be a list'),
    ('optim.base_lr=(0.01, 0.02)', 'must be a list'),
    ('optim.base_lr=[]', 'empty'),
    ('optim.base_lr=[0.01,0.01]', 'repeated'),
    ('optim.base_lr=[0.01', 'unbalanced'),
    ('optim.base_lr=[0.01]]', 'unbalanced'),
    ("model.dtype=['float32]", 'unterminated'),
    ('model.dtype=[float32]', 'strings need quotes'),
    ('optim.base_lr=[1,,2]', 'syntax error'),
    ('1optim=[1]', 'not a dotted config key'),
    ('optim.base_lr=[1] optim.base_lr=[2]', 'twice'),
])
def test_bad_grid_specs_are_clear_errors(spec, message):
  with pytest.raises(sweep.GridError, match=message):
    sweep.parse_grid(spec)


def test_run_names_are_filesystem_safe_short_and_distinct():
  runs = sweep.expand(sweep.parse_grid(
      "optim.base_lr=[0.01,1e-05] train.batch_size=[8] data.train_sizes=[(96, 128)]"))
  assert sweep.run_names(runs) == [
      'base_lr=0.01__batch_size=8__train_sizes=96-128',
      'base_lr=1e-05__batch_size=8__train_sizes=96-128']
  # Keys with the same last part keep more of their path.
  assert sweep.run_name({'a.lr': 1, 'b.lr': 2, 'c.d.x': 'y'}) == 'a.lr=1__b.lr=2__x=y'
  # Unsafe characters are replaced; values that then collide get a hash suffix.
  names = sweep.run_names([{'m.s': 'a/b c'}, {'m.s': 'a b/c'}, {'m.s': '../..'}])
  assert len(set(names)) == 3
  for name in names:
    assert name.startswith('s=a-b-c') or name.startswith('s=..-..')
    assert '/' not in name and ' ' not in name and not name.startswith('.')
  assert len(sweep.run_name({'m.s': 'x' * 500})) <= 150
  # How detx.main receives each value.
  assert [sweep.format_value(v) for v in (0.01, 8, True, (96,), 'float32')] == [
      '0.01', '8', 'True', '(96,)', 'float32']


def test_grid_and_set_keys_are_checked_against_the_config(tmp_path, capsys):
  def run(*args):
    return sweep.main([f'--config={QUICKSTART}', f'--workdir={tmp_path / "w"}', '--dry-run', *args])

  assert run('--grid=optim.base_lrr=[1]') == 2
  assert "unknown config key 'optim.base_lrr' (did you mean optim.base_lr?)" in capsys.readouterr().err
  assert run('--grid=train.batch_size=["8"]') == 2
  assert 'does not fit the config field of type int' in capsys.readouterr().err
  assert run('--grid=optim.base_lr=[1]', '--set', 'optim.base_lr=2') == 2
  assert 'both in --grid and --set' in capsys.readouterr().err
  assert run('--grid=optim.base_lr=[1]', '--set', 'train.steps') == 2
  assert 'expected key=value' in capsys.readouterr().err
  assert run("--grid=optim.base_lr=[0.01,0.02] data.train_sizes=[(64,)]",
             '--set', 'train.steps=4', '--set', 'data.dir=/x y') == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 2 and not (tmp_path / 'w').exists()
  name, cmd = lines[0].split(': ', 1)
  assert name == 'base_lr=0.01__train_sizes=64'
  argv = shlex.split(cmd)
  assert argv[1:3] == ['-m', 'detx.main'] and f'--workdir={tmp_path / "w" / name}' in argv
  assert {'--config.train.steps=4', '--config.data.dir=/x y', '--config.optim.base_lr=0.01',
          '--config.data.train_sizes=(64,)'} <= set(argv)


# ------------------------------------------- fast: scheduling, fake detx.main ---

FAKE_MAIN = '''
import json, os, sys
from pathlib import Path
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--'))
workdir = Path(args['workdir'])
workdir.mkdir(parents=True, exist_ok=True)
with open(workdir.parent / 'calls.txt', 'a') as f:
  f.write(workdir.name + '\\n')
if os.environ.get('FAKE_FAIL') and args['config.optim.base_lr'] == '0.5':
  print('Traceback (most recent call last):\\nValueError: boom', file=sys.stderr)
  sys.exit(1)
steps = int(args['config.train.steps'])
stop = int(args.get('config.train.stop_at', 0)) or steps
ckpts = workdir / 'checkpoints'
done = sorted(int(p.name) for p in ckpts.glob('*')) if ckpts.exists() else []
start = done[-1] if done else 0
print(f'fake: start {start}')
with open(workdir / 'metrics.jsonl', 'a') as f:
  for step in range(start + 1, stop + 1):
    f.write(json.dumps({'step': step, 'train/loss': 8.0 / step}) + '\\n')
  if stop > start:
    (ckpts / str(stop)).mkdir(parents=True)
  if stop == steps:
    f.write(json.dumps({'step': steps, 'bbox/AP': 0.25, 'bbox/AP50': 0.5, 'bbox/AR1': 0.1,
                        'bbox/AP/person': 0.3, 'eval/images': 8}) + '\\n')
'''


def test_sweep_fails_one_run_resumes_and_skips_with_a_fake_main(tmp_path, monkeypatch, capsys):
  fake = tmp_path / 'fake_main.py'
  fake.write_text(textwrap.dedent(FAKE_MAIN))
  workdir = tmp_path / 'sweep'
  base = [f'--config={QUICKSTART}', f'--workdir={workdir}', '--grid=optim.base_lr=[0.1,0.5]',
          '--parallel=2', f'--python={shlex.join([sys.executable, str(fake)])}',
          '--set', 'train.steps=4']
  calls = lambda: (workdir / 'calls.txt').read_text().split()

  # 1. One run crashes, the other stops early (train.stop_at): neither is done.
  monkeypatch.setenv('FAKE_FAIL', '1')
  assert sweep.main(base + ['--set', 'train.stop_at=2']) == 1
  rows = _summary(workdir)
  assert list(rows) == ['base_lr=0.1', 'base_lr=0.5']
  assert rows['base_lr=0.1']['status'] == 'incomplete' and rows['base_lr=0.1']['step'] == '2'
  assert rows['base_lr=0.5']['status'] == 'failed'
  assert rows['base_lr=0.5']['error'] == 'ValueError: boom'
  assert rows['base_lr=0.1']['optim.base_lr'] == '0.1'
  assert 'ValueError: boom' in (workdir / 'base_lr=0.5' / 'log.txt').read_text()
  assert '| failed |' in (workdir / 'summary.md').read_text()
  assert sorted(calls()) == ['base_lr=0.1', 'base_lr=0.5']

  # 2. Re-run: the stopped run resumes from its checkpoint, the failed one starts again.
  monkeypatch.delenv('FAKE_FAIL')
  assert sweep.main(base) == 0
  rows = _summary(workdir)
  for name in ('base_lr=0.1', 'base_lr=0.5'):
    row = rows[name]
    assert (row['status'], row['step'], row['eval_step']) == ('done', '4', '4'), row
    assert float(row['train/loss']) == 2.0 and float(row['bbox/AP50']) == 0.5
    assert float(row['bbox/AR1']) == 0.1 and row['error'] == ''
  log = (workdir / 'base_lr=0.1' / 'log.txt').read_text()
  assert 'resuming from step 2' in log and 'fake: start 2' in log
  md = (workdir / 'summary.md').read_text()
  assert '2/2 done' in md and 'bbox/AP50' in md and 'bbox/AR1' not in md  # AR in the CSV only
  assert 'bbox/AP/person' not in md and float(rows['base_lr=0.1']['bbox/AP/person']) == 0.3
  assert len(calls()) == 4

  # 3. Re-run: both finished runs are skipped, nothing is started.
  capsys.readouterr()
  assert sweep.main(base) == 0
  assert len(calls()) == 4
  out = capsys.readouterr().out
  assert 'skip base_lr=0.1' in out and 'skip base_lr=0.5' in out
  assert 'skipped: finished' in (workdir / 'base_lr=0.5' / 'log.txt').read_text()
  assert {r['status'] for r in _summary(workdir).values()} == {'done'}


# ----------------------------------------------------- slow: real detx runs ---

@pytest.mark.slow
def test_sweep_two_tiny_quickstart_runs_then_skip(tmp_path):
  from detx.data import synthetic
  data = synthetic.generate(tmp_path / 'shapes', num_train=24, num_val=8, image_size=64, seed=0)
  workdir = tmp_path / 'sweep'
  cmd = [sys.executable, str(SCRIPT), f'--config={QUICKSTART}', f'--workdir={workdir}',
         '--grid=optim.base_lr=[0.01, 0.02]', '--parallel=2']
  for item in TINY + [f'data.dir={data}', f'data.cache_dir={tmp_path / "tfds"}']:
    cmd += ['--set', item]
  r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

  rows = _summary(workdir)
  assert list(rows) == ['base_lr=0.01', 'base_lr=0.02']
  for name, lr in (('base_lr=0.01', '0.01'), ('base_lr=0.02', '0.02')):
    row = rows[name]
    assert (row['optim.base_lr'], row['status'], row['step'], row['eval_step']) == (lr, 'done', '4', '4')
    assert float(row['train/loss']) > 0
    assert 0 <= float(row['bbox/AP']) <= 1 and 0 <= float(row['bbox/AP50']) <= 1
    assert 'step 4/4' in (workdir / name / 'log.txt').read_text()
  assert rows['base_lr=0.01']['train/loss'] != rows['base_lr=0.02']['train/loss']
  md = (workdir / 'summary.md').read_text()
  assert '| base_lr=0.01 | 0.01 | done | 4 |' in md and '| base_lr=0.02 | 0.02 | done | 4 |' in md

  def snapshot():
    return {name: ((workdir / name / 'metrics.jsonl').read_bytes(),
                   sorted(p.name for p in (workdir / name / 'checkpoints').iterdir()))
            for name in rows}
  before = snapshot()
  r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert 'skip base_lr=0.01' in r.stdout and 'skip base_lr=0.02' in r.stdout
  assert 'sweep: start' not in r.stdout
  assert snapshot() == before  # no step trained, no evaluation logged
  for name in rows:
    log = (workdir / name / 'log.txt').read_text()
    assert log.count('starting:') == 1 and log.rstrip().splitlines()[-1].endswith(
        'skipped: finished (checkpoint and evaluation at step 4)')
  assert {r['status'] for r in _summary(workdir).values()} == {'done'}
