"""detx.export (issue 20, item 5): the params-only checkpoint and the serialised
inference function (jax.export), each run by detx.predict and giving the detections of
the training checkpoint they come from; on the one-step tiny YOLOv3 run of
tests/test_predict.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from detx import checkpoint, config as cfg, export, run_config, train, workdir
from detx.models import base
from detx.weights import pretrained
from tests.helpers import flat_params
from tests.test_predict import ROOT, assert_same_detections, predict_cli, tiny_run  # noqa: F401


def export_cli(capsys, *args):
  code = export.cli_run(['detx.export', *map(str, args)])
  out, err = capsys.readouterr()
  return code, out, err


def _size(path) -> int:
  return sum(p.stat().st_size for p in Path(path).rglob('*') if p.is_file())


def test_params_only_export(tiny_run, tmp_path, capsys):  # noqa: F811
  _, workdir, images = tiny_run
  out = tmp_path / 'params'
  code, text, err = export_cli(capsys, f'--workdir={workdir}', f'--out={out}', '--format=params')
  assert code == 0, err
  assert f'config: {workdir / "config.json"}' in text
  saved, full = checkpoint.restore_variables(out), checkpoint.restore_variables(workdir)
  assert set(saved) == {'params', 'batch_stats'} and 'opt_state' in full
  a, b = flat_params(saved), flat_params({k: full[k] for k in saved})
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  step = checkpoint.find(workdir).name
  assert _size(out / 'checkpoints') < 0.75 * _size(workdir / 'checkpoints' / step)
  assert not (out / 'inference').exists()
  # model.pretrained=OUT fills every variable of the same model with the run's values
  filled, _ = pretrained.load(jax.tree.map(np.zeros_like, {k: full[k] for k in saved}), out)
  f = flat_params(filled)
  assert f.keys() == b.keys() and all(np.array_equal(f[k], b[k]) for k in b)
  assert json.loads((out / 'config.json').read_text()) == json.loads(
      (workdir / 'config.json').read_text())
  # predict reads it as a checkpoint (its config.json and categories.json beside it)
  for name, source in (('from_run', workdir), ('from_export', out)):
    code, _, err = predict_cli(capsys, f'--checkpoint={source}', f'--input={images}',
                               f'--output={tmp_path / name}', '--json_only')
    assert code == 0, err
  run, exported = (json.loads((tmp_path / n / 'detections.json').read_text())
                   for n in ('from_run', 'from_export'))
  assert run and exported == run


def test_exported_inference_function(tiny_run, tmp_path, capsys, monkeypatch):  # noqa: F811
  """The serialised eval program, loaded by predict with no model code (building a model
  fails here), gives the checkpoint's detections, batches of 2 with a padded last one,
  and on 2 devices."""
  _, workdir, images = tiny_run
  out = tmp_path / 'exp'
  # lowered for CUDA too (a GPU host runs the same file), run here on the CPU
  code, _, err = export_cli(capsys, f'--workdir={workdir}', f'--out={out}', '--batch_size=2',
                            '--platforms=cpu,cuda')
  assert code == 0, err
  manifest = json.loads((out / 'inference' / 'manifest.json').read_text())
  assert manifest['shapes'] == {'64x64.jax': [64, 64]} and manifest['batch_per_device'] == 2
  assert manifest['platforms'] == ['cpu', 'cuda']
  assert (out / 'inference' / '64x64.jax').stat().st_size > 1000
  code, _, err = predict_cli(capsys, f'--checkpoint={workdir}', f'--input={images}',
                             f'--output={tmp_path / "ckpt"}', '--json_only', '--batch_size=2')
  assert code == 0, err

  def no_model(*args, **kwargs):
    raise AssertionError('predict built a model')

  with monkeypatch.context() as patch:
    patch.setattr(base, 'build_model', no_model)
    for name, flag in (('exported', '--exported'), ('detected', '--checkpoint')):
      code, text, err = predict_cli(capsys, f'{flag}={out}', f'--input={images}',
                                    f'--output={tmp_path / name}', '--json_only')
      assert code == 0, err
      assert 'the exported inference function' in text and 'in batches of 2' in text
  ckpt = json.loads((tmp_path / 'ckpt' / 'detections.json').read_text())
  for name in ('exported', 'detected'):
    got = json.loads((tmp_path / name / 'detections.json').read_text())
    assert ckpt and {r['image_id'] for r in got} == {r['image_id'] for r in ckpt}
    assert_same_detections(got, ckpt, atol=1e-4)
  # on 2 devices (a subprocess: XLA's host device count is fixed at start-up): the
  # program runs per device under shard_map, 2 images each, the last batch of 4 padded
  env = dict(os.environ, XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} '
                                   '--xla_force_host_platform_device_count=2')
  r = subprocess.run([sys.executable, '-m', 'detx.predict', f'--exported={out}',
                      f'--input={images}', f'--output={tmp_path / "two"}', '--json_only'],
                     cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'in batches of 4 on 2 device(s)' in r.stdout
  assert_same_detections(json.loads((tmp_path / 'two' / 'detections.json').read_text()), ckpt,
                         atol=1e-4)
  # a second export into the same directory replaces it; a directory of something else
  # and a workdir without a checkpoint are refused in one line
  assert export_cli(capsys, f'--workdir={workdir}', f'--out={out}', '--format=params')[0] == 0
  assert not (out / 'inference').exists()
  code, _, err = export_cli(capsys, f'--workdir={workdir}', f'--out={images}')
  assert code == 2 and 'not empty and holds no export' in err and 'Traceback' not in err
  code, _, err = export_cli(capsys, f'--workdir={tmp_path / "none"}', f'--out={tmp_path / "x"}')
  assert code == 2 and 'no checkpoint' in err and 'Traceback' not in err


@pytest.mark.parametrize('name', sorted(p.stem for p in cfg.CONFIG_DIR.glob('*.py')))
def test_run_config_json_gives_back_the_config(name, tmp_path):
  """A run's config.json (as training writes it) read back by detx.run_config is the config
  itself: the same keys, values and types (tuples, not JSON's lists), so predict and export
  build the model the run trained."""
  c = cfg.load(name)
  path = tmp_path / 'config.json'
  train.write_config(c, tmp_path)
  back = run_config.get_config(str(path))
  assert back.to_dict() == c.to_dict()
  leaves = lambda d: [(k, type(v)) for k, v in workdir.flatten(d).items()]
  assert leaves(back.to_dict()) == leaves(c.to_dict())
