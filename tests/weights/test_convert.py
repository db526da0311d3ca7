"""python -m detx.weights.convert: Paddle weights -> a detx checkpoint that predict and
--mode=eval load (the command line in-process through convert.run)."""
import json

import jax
import numpy as np

from detx import config as cfg
from detx import evaluation, predict, sharding
from detx.weights import convert
from detx.weights import paddle as pw
from tests.helpers import TINY_ARGS, flat_params, tiny_config
from tests.weights.test_fetch import _tiny_state


def test_convert_round_trip(tmp_path, capsys):
  c, state, rules = _tiny_state(tmp_path)
  pw.save_paddle_weights(jax.device_get(state.variables()), tmp_path / 'pd', rules.paddle)
  ann = tmp_path / 'ann.json'
  ann.write_text(json.dumps({'categories': [{'id': 7 + i, 'name': f'k{i}'} for i in range(4)]}))
  out = tmp_path / 'converted'
  argv = ['convert', str(tmp_path / 'pd'), f'--config={cfg.CONFIG_DIR / "quickstart.py"}',
          f'--out={out}', f'--categories={ann}', *TINY_ARGS, '--config.seed=3']
  assert convert.run(argv) == 0
  assert 'detx: pretrained from' in capsys.readouterr().out
  assert json.loads((out / 'config.json').read_text())['seed'] == 3
  c2 = tiny_config(tmp_path, **{'seed': 3})
  _, restored = evaluation.restore_state(c2, out, sharding.make_mesh())
  for tree in ('params', 'batch_stats'):
    want, got = flat_params(getattr(state, tree)), flat_params(getattr(restored, tree))
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  images = tmp_path / 'shapes' / 'val2017'
  one = sorted(images.iterdir())[0]
  predict.run(c2, str(out), str(one), str(tmp_path / 'pred'))  # loads it, runs the model
  assert (tmp_path / 'pred' / 'detections.json').is_file()
  assert predict.load_categories(out, c2) == ([7, 8, 9, 10], ['k0', 'k1', 'k2', 'k3'])
  # a second convert into the same directory, or without a source: one line, exit 2
  assert convert.run(argv) == 2
  assert convert.run(argv[:1] + argv[2:]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0] == f'detx: --out {out} already holds a checkpoint; give a new directory'
  assert err[1].startswith('detx: give exactly one source (a path or URL) before the flags')
