"""Bad input: bad data stops a run with one clear error naming the file or record, before
any checkpoint is written (and never leaves a partial one); every user mistake on the
command line (a config key, a value's type, a config file, a flag, a path, a workdir
that holds another model, a missing checkpoint, a dataset that does not fit
model.num_classes, a data error) is one line `detx: <message>` on stderr and exit code
2, without a traceback and with the workdir as it was. Most are checked in-process
through detx.main.run (the command line's own function); a slow test runs the real
entry points."""
import io
import json
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from detx import checkpoint, errors, main, metrics, train
from detx.data import DataError
from tests.helpers import tiny_argv, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint_steps(workdir):
  d = workdir / 'checkpoints'
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _broken_copy(tmp_path, name):
  c = tiny_config(tmp_path)  # generates tmp_path/shapes
  src = tmp_path / 'shapes'
  dst = tmp_path / name
  shutil.copytree(src, dst)
  c.data.dir = str(dst)
  c.data.cache_dir = str(tmp_path / f'tfds_{name}')
  return c, dst


def test_missing_data_dir_names_the_expected_layout(tmp_path, capsys):
  c = tiny_config(tmp_path)
  c.data.dir = str(tmp_path / 'nowhere')
  c.data.name = 'coco'
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  msg = str(e.value)
  assert 'nowhere' in msg and 'annotations/instances_train2017.json' in msg
  assert _checkpoint_steps(tmp_path / 'run') == []
  # The command line: the same message as one line, exit code 2.
  err = _refused(capsys, tiny_argv(tmp_path / 'run', tmp_path / 'nowhere', tmp_path / 'tfds',
                                   '--config.data.name=coco'))
  assert 'nowhere' in err and 'annotations/instances_train2017.json' in err


def test_corrupt_jpeg_is_named(tmp_path):
  c, d = _broken_copy(tmp_path, 'corrupt')
  victim = sorted((d / 'train2017').iterdir())[3]
  victim.write_bytes(victim.read_bytes()[:200])  # truncated
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert victim.name in str(e.value)
  assert _checkpoint_steps(tmp_path / 'run') == []


def test_negative_width_annotation_is_named(tmp_path):
  c, d = _broken_copy(tmp_path, 'negw')
  ann_file = d / 'annotations' / 'instances_train2017.json'
  coco = json.loads(ann_file.read_text())
  bad = coco['annotations'][5]
  bad['bbox'][2] = -4.0
  ann_file.write_text(json.dumps(coco))
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert str(bad['id']) in str(e.value)
  assert _checkpoint_steps(tmp_path / 'run') == []


def test_bad_data_after_a_checkpoint_keeps_it(tmp_path):
  """A failure on resume leaves the existing checkpoint intact and loadable."""
  c = tiny_config(tmp_path, steps=3)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3']
  c2, d = _broken_copy(tmp_path, 'later')
  victim = sorted((d / 'train2017').iterdir())[0]
  victim.write_bytes(b'not a jpeg')
  c2.train.steps = 6
  with pytest.raises(DataError):
    train.train_and_evaluate(c2, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3']
  c.train.steps = 4
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3', '4']


# ------------------------------------------------------- command-line mistakes ---

def _run(argv) -> tuple[int, str, str]:
  """detx.main.run(argv) in-process: (exit code, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with redirect_stdout(out), redirect_stderr(err):
    rc = main.run(['detx.main', *map(str, argv)])
  return rc, out.getvalue(), err.getvalue()


def _refused(capsys, argv) -> str:
  """Runs the command line in-process; asserts exit code 2, one stderr line
  `detx: ...` and no traceback; returns that line."""
  capsys.readouterr()
  rc = main.run(['detx.main', *map(str, argv)])
  out, err = capsys.readouterr()
  lines = [l for l in err.splitlines() if l.strip() and not l.startswith('WARNING:absl')]
  assert rc == errors.EXIT_USER_ERROR, (rc, out[-2000:], err[-2000:])
  assert len(lines) == 1 and lines[0].startswith('detx: '), err[-3000:]
  assert 'Traceback' not in out + err
  return lines[0]


def _snapshot(workdir: Path) -> dict:
  """Every file under workdir -> its bytes (a refused run must change none)."""
  return {str(p.relative_to(workdir)): p.read_bytes()
          for p in sorted(workdir.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def trained(tmp_path_factory, shapes_dir, tmp_cache):
  """A two-step train_and_eval run of the tiny quickstart through detx.main.run:
  (workdir, its stdout)."""
  workdir = tmp_path_factory.mktemp('cli') / 'run'
  rc, out, err = _run(tiny_argv(workdir, shapes_dir, tmp_cache, '--config.train.steps=2'))
  assert rc == 0, err[-3000:]
  return workdir, out


@pytest.fixture
def trained_copy(trained, tmp_path):
  shutil.copytree(trained[0], tmp_path / 'run')
  return tmp_path / 'run'


# (extra arguments, text the one line must hold); the workdir is never created.
PARSE_MISTAKES = {
    'unknown key': (['--config.train.stepz=3'],
                    'unknown config key train.stepz; did you mean train.steps?'),
    'unknown nested key': (['--config.model.backbone.dephts=3'],
                           'did you mean model.backbone.depths?'),
    'wrong type': (['--config.train.steps=abc'], 'config key train.steps holds an int'),
    'wrong tuple': (['--config.data.train_sizes=abc'], 'bad value for config key data.train_sizes'),
    'wrong bool': (['--config.model.remat=maybe'], 'bad value for config key model.remat'),
    'unknown flag': (['--mdoe=eval'], "'mdoe'"),
    'no config file': (['--config=configs/quickstar.py'],
                       'no config file configs/quickstar.py; did you mean configs/quickstart.py?'),
    'eval without a checkpoint': (['--mode=eval'], 'no checkpoint in'),
    'predict without a checkpoint': (['--mode=predict', '--input=x.jpg'], 'no checkpoint in'),
}


def test_bad_size_group_is_refused_before_the_workdir(shapes_dir, tmp_cache, tmp_path, capsys):
  line = _refused(capsys, tiny_argv(tmp_path / 'run', shapes_dir, tmp_cache,
                                    '--config.data.size_group=3'))
  assert 'data.size_group=3 must divide train.batch_size=4' in line, line
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('name', PARSE_MISTAKES)
def test_command_line_mistakes_are_one_line(name, tmp_path, capsys, monkeypatch):
  """Parse-time mistakes and a missing checkpoint: refused before the model is built."""
  from detx.evaluation import loop
  from detx.models import base

  def no_model(*args, **kwargs):
    raise AssertionError('the model was built')

  monkeypatch.setattr(base, 'build_model', no_model)
  monkeypatch.setattr(loop, 'build_model', no_model)
  monkeypatch.setattr(train, 'build_model', no_model)
  extra, text = PARSE_MISTAKES[name]
  argv = tiny_argv(tmp_path / 'run', tmp_path / 'shapes', tmp_path / 'tfds')
  if extra[0].startswith('--config='):
    argv[0] = extra[0]  # in place of the quickstart's path
  else:
    argv += extra
  line = _refused(capsys, argv)
  assert text in line, line
  assert not (tmp_path / 'run').exists()


def test_required_flags_and_bad_paths_are_one_line(tmp_path, capsys):
  argv = tiny_argv(tmp_path / 'run', tmp_path / 'shapes', tmp_path / 'tfds')
  assert _refused(capsys, [a for a in argv if not a.startswith('--workdir')]) == \
      'detx: --workdir is required'
  assert _refused(capsys, argv[1:]) == 'detx: --config=configs/<name>.py is required'
  (tmp_path / 'file').write_text('')
  line = _refused(capsys, tiny_argv(tmp_path / 'file', tmp_path / 'shapes', tmp_path / 'tfds'))
  assert 'is a file, not a directory' in line
  tiny_config(tmp_path)  # the shapes data
  line = _refused(capsys, argv + [f'--config.model.pretrained={tmp_path / "nowhere"}',
                                  '--config.train.steps=1', '--mode=train'])
  assert line == (f'detx: model.pretrained: {tmp_path / "nowhere"} does not exist; '
                  "or pass --config.model.pretrained='' to start from random weights")
  assert not (tmp_path / 'run' / 'config.json').exists()  # refused before writing


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
  argv = ['detx.main', *tiny_argv(tmp_path / 'run', tmp_path / 'shapes', tmp_path / 'tfds'),
          '--config.train.stepz=3']
  with pytest.raises(errors.ConfigError, match='train.stepz'):
    main.run(argv + ['--debug'])
  monkeypatch.setenv('DETX_DEBUG', '1')
  with pytest.raises(errors.ConfigError, match='train.stepz'):
    main.run(argv)


def test_dataset_categories_against_model_num_classes(shapes_dir, tmp_cache, tmp_path, capsys):
  """More categories than model.num_classes is refused (the quickstart's 4 classes on
  COCO's 80: here 3 on the shapes' 4), and evaluation needs the same count."""
  line = _refused(capsys, tiny_argv(tmp_path / 'run', shapes_dir, tmp_cache, '--mode=train',
                                    '--config.model.num_classes=3'))
  assert re.search(r'\(train\) has 4 categories but model.num_classes is 3: '
                   r'set --config.model.num_classes=4', line), line
  line = _refused(capsys, tiny_argv(tmp_path / 'run', shapes_dir, tmp_cache,
                                    '--config.model.num_classes=5'))
  assert '(val) has 4 categories but model.num_classes is 5' in line, line
  assert not (tmp_path / 'run' / 'config.json').exists()


def test_start_up_banner_and_first_eta_after_compilation(trained):
  workdir, out = trained
  lines = out.splitlines()
  banner = [l for l in lines[:lines.index(next(l for l in lines if l.startswith('step 1/')))]
            if l.startswith('detx: ')]
  text = '\n'.join(banner)
  assert re.search(r'^detx: devices: 1 x cpu .*1 process; mesh data=1; batch 4 \(4 per device\)$',
                   text, re.M), text
  n = train.count_params(checkpoint.restore_variables(workdir)['params'])
  assert f'detx: model: yolov3, {n:,} parameters (darknet backbone, 4 classes)' in text, text
  assert re.search(r'^detx: data: train 24 images, 4 categories \(.*\); val 8 images$', text, re.M)
  changed = re.search(r'^detx: config: differs from its file in (.*)$', text, re.M).group(1)
  assert 'train.steps=2' in changed and 'model.backbone.width=0.125' in changed, changed
  assert f'detx: workdir: {workdir}; starting at step 0 of 2' in text, text
  # The first step's line reports compilation, not an ETA; the next one has the ETA.
  step1 = next(l for l in lines if l.startswith('step 1/2 '))
  step2 = next(l for l in lines if l.startswith('step 2/2 '))
  assert re.search(r'first step [\d.]+ s \(compilation', step1) and 'img/s' not in step1, step1
  assert re.search(r'[\d.]+ img/s eta [\d.]+ min$', step2), step2
  rows = {r['step']: r for r in metrics.read_metrics(workdir) if 'train/loss' in r}
  assert 'train/first_step_s' in rows[1] and 'train/img_per_s' not in rows[1]
  assert 'train/img_per_s' in rows[2]


def test_workdir_of_another_model_is_refused_and_left_as_it_was(trained_copy, capsys):
  before = _snapshot(trained_copy)
  line = _refused(capsys, tiny_argv(trained_copy, 'unused', 'unused',
                                    '--config.model.backbone.width=0.25',
                                    '--config.optim.clip_norm=1.0'))
  assert 'holds a run of another model' in line, line
  assert 'model.backbone.width 0.125 -> 0.25' in line and 'optim.clip_norm 0.0 -> 1.0' in line
  assert _snapshot(trained_copy) == before  # config.json byte-identical, nothing written


def test_predict_input_path_is_checked(trained, tmp_path, capsys):
  workdir, _ = trained
  before = _snapshot(workdir)
  line = _refused(capsys, tiny_argv(workdir, 'unused', 'unused', '--mode=predict',
                                    f'--input={tmp_path / "nowhere.jpg"}'))
  assert line == f'detx: --input {tmp_path / "nowhere.jpg"} is neither an image nor a directory'
  assert _snapshot(workdir) == before


def test_checkpoint_of_another_model_is_refused(trained_copy, shapes_dir, tmp_cache, capsys):
  """The checkpoint's own arrays decide when config.json does not (none here), and for
  evaluation: refused before anything is written, naming the arrays."""
  (trained_copy / 'config.json').unlink()
  before = _snapshot(trained_copy)
  for mode in ('train', 'eval'):
    line = _refused(capsys, tiny_argv(trained_copy, shapes_dir, tmp_cache, f'--mode={mode}',
                                      '--config.model.backbone.width=0.25'))
    assert 'holds another model or optimizer' in line and 'params/backbone' in line, line
    assert _snapshot(trained_copy) == before


def test_resume_prints_the_run_control_keys_that_differ(trained_copy, shapes_dir, tmp_cache):
  rc, out, err = _run(tiny_argv(trained_copy, shapes_dir, tmp_cache, '--mode=train',
                                '--config.train.steps=3', '--config.train.log_every=3',
                                '--config.data.num_workers=0'))
  assert rc == 0, err[-3000:]
  line = next(l for l in out.splitlines() if '/config.json in' in l)
  assert 'train.steps 2 -> 3' in line and 'train.log_every 1 -> 3' in line, line
  assert f'detx: workdir: {trained_copy}; resuming at step 2 of 3' in out
  assert re.search(r'^detx: resumed from \S+/checkpoints/2$', out, re.M), out
  assert json.loads((trained_copy / 'config.json').read_text())['train']['steps'] == 3


@pytest.mark.slow
def test_mistakes_through_the_real_entry_points(trained, tmp_path):
  """`python -m detx.main` / `python -m detx.predict`: exit code 2, one stderr line
  naming the key, file or workdir, no traceback, config.json byte-identical."""
  workdir, _ = trained
  config_json = (workdir / 'config.json').read_bytes()
  base = tiny_argv(workdir, 'unused', 'unused')
  cases = [
      (['-m', 'detx.main', *base, '--config.train.stepz=3'], 'did you mean train.steps?'),
      (['-m', 'detx.main', *base, '--config.train.steps=abc'], 'train.steps'),
      (['-m', 'detx.main', '--config=configs/nope.py', *base[1:]], 'no config file configs/nope.py'),
      (['-m', 'detx.main', *base, '--config.model.num_classes=80'],
       'model.num_classes 4 -> 80'),
      (['-m', 'detx.predict', '--config=configs/quickstart.py', f'--checkpoint={tmp_path}',
        '--input=x.jpg', f'--output={tmp_path / "out"}'], f'no checkpoint in {tmp_path}'),
  ]
  for args, text in cases:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, (args, r.stdout[-2000:], r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('detx: ') and text in lines[0], r.stderr
    assert 'Traceback' not in r.stdout + r.stderr
  assert (workdir / 'config.json').read_bytes() == config_json
