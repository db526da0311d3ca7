"""train.make_optimizer: clipping, coupled L2, momentum and per-parameter lr multipliers."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from detx import config as cfg
from detx import schedules
from detx.optim import ParamRules
from detx.train import make_optimizer


def _tx(clip=0.0, decay=0.0, mult=None):
  c = cfg.default()
  c.optim.update(clip_norm=clip, weight_decay=decay, momentum=0.9)
  c.optim.schedule = schedules.schedule_config('1x')
  rules = ParamRules(lambda p: {k: k == 'w' for k in p}, mult)
  return make_optimizer(c, rules)[0]


@pytest.mark.parametrize('clip', [0.0, 1.0])
def test_clip_norm_bounds_the_first_update(clip):
  params = {'w': jnp.ones((3,)), 'b': jnp.ones((2,))}
  grads = {'w': jnp.full((3,), 30.0), 'b': jnp.full((2,), 40.0)}
  tx = _tx(clip)
  updates, _ = tx.update(grads, tx.init(params), params)
  norm = float(optax.global_norm(updates))
  raw = float(optax.global_norm(grads))
  assert norm == pytest.approx(clip if clip else raw, rel=1e-5)


def test_decay_mask_and_lr_multipliers():
  params = {'w': jnp.full((2,), 2.0), 'b': jnp.full((2,), 2.0)}
  grads = {'w': jnp.zeros((2,)), 'b': jnp.ones((2,))}
  tx = _tx(decay=0.1, mult=lambda p: {'w': 1.0, 'b': 2.0})
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], 0.2)  # 0.1 * w, no gradient
  np.testing.assert_allclose(updates['b'], 2.0)  # no decay on b, lr x2
