"""model.pretrained: a detx run or Paddle weights into a fresh run (detx.weights.pretrained)."""
import jax
import numpy as np
import pytest

from detx import sharding, train
from detx.models.base import build_model
from detx.weights import paddle as pw
from detx.weights import pretrained
from tests.helpers import flat_params, tiny_config


def _state(c):
  module, rules = build_model(c)
  tx, _ = train.make_optimizer(c, rules)
  return train.init_state(c, module, tx, sharding.make_mesh()), rules


def test_from_a_detx_run_with_another_head(tmp_path, capsys):
  c = tiny_config(tmp_path, steps=2)
  train.train_and_evaluate(c, str(tmp_path / 'a'), do_eval=False)
  trained, _ = _state(c)
  from detx import checkpoint
  saved = flat_params(checkpoint.restore_variables(tmp_path / 'a')['params'])

  # 5 classes: another head; more classes than the data's 4 categories is allowed
  # (fewer would be refused: labels without an output)
  c2 = tiny_config(tmp_path, steps=2, **{'model.num_classes': 5, 'seed': 7})
  c2.model.pretrained = str(tmp_path / 'a')
  fresh, rules = _state(c2)
  loaded = flat_params(train.load_pretrained(c2, fresh, rules).params)
  before = flat_params(fresh.params)
  same = [k for k in loaded if k in saved and saved[k].shape == loaded[k].shape]
  other = [k for k in loaded if k not in same]
  assert len(same) > 10 and other  # the output convs depend on the class count
  for k in same:
    np.testing.assert_array_equal(loaded[k], saved[k], err_msg=k)
  for k in other:
    np.testing.assert_array_equal(loaded[k], before[k], err_msg=k)
  train.train_and_evaluate(c2, str(tmp_path / 'b'), do_eval=False)  # a run starts from it
  out = capsys.readouterr().out
  assert f'pretrained from {tmp_path / "a"}: loaded ' in out
  assert 're-initialised (another shape, e.g. a head for another class count)' in out


def test_from_paddle_files_round_trip(tmp_path):
  c = tiny_config(tmp_path)
  state, rules = _state(c)
  pw.save_paddle_weights(jax.device_get(state.variables()), tmp_path / 'pd', rules.paddle)
  c.seed = 3
  c.model.pretrained = str(tmp_path / 'pd')
  fresh, _ = _state(c)
  assert not all(np.array_equal(a, b) for a, b in zip(
      flat_params(fresh.params).values(), flat_params(state.params).values()))
  loaded = train.load_pretrained(c, fresh, rules)
  for tree in ('params', 'batch_stats'):
    want, got = flat_params(getattr(state, tree)), flat_params(getattr(loaded, tree))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_bad_sources_are_named(tmp_path):
  c = tiny_config(tmp_path, steps=1)
  c.model.pretrained = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='nowhere'):
    train.train_and_evaluate(c, str(tmp_path / 'run'), do_eval=False)
  (tmp_path / 'empty').mkdir()
  pw.save_paddle_dir(tmp_path / 'empty', {'unrelated_w': np.zeros((2, 2), np.float32)})
  state, rules = _state(c)
  with pytest.raises(pw.WeightLoadError, match='fills none'):
    pretrained.load(jax.device_get(state.variables()), tmp_path / 'empty', rules.paddle)
