"""model.dtype='bfloat16' computes the convolutions in bf16 while parameters, optimizer
state, BatchNorm statistics, gradients and losses stay float32 (README: mixed precision),
for every family. The train step is traced abstractly (jax.eval_shape): no compilation."""
import jax
import jax.numpy as jnp
import pytest

from detx import config as cfg
from detx import sharding, train
from detx.models.base import build_model
from detx.optim import make_optimizer
from tests.test_configs import RCNN_PIPELINE, _rcnn_batch, _tiny, _yolo_batch

# One per family and norm layer (BatchNorm, AffineChannel, frozen / trained).
NAMES = ('quickstart', 'faster_rcnn_r50_1x', 'mask_rcnn_r50_fpn_1x', 'retinanet_r50_fpn_1x')


def _abstract_step(name):
  c = _tiny(cfg.load(name))
  c.model.dtype = 'bfloat16'
  c.model.pretrained = ''
  module, rules = build_model(c)
  tx, lr_fn = make_optimizer(c, rules)
  batch = _rcnn_batch(c) if c.model.name in RCNN_PIPELINE else _yolo_batch(c)
  train_b = {k: batch[k] for k in module.TRAIN_KEYS}
  eval_b = {k: batch[k] for k in module.EVAL_KEYS}
  mesh = sharding.make_mesh()

  def init(key):
    v = module.init(key, eval_b, train=False)
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=v['params'],
                            batch_stats=v.get('batch_stats', {}),
                            opt_state=tx.init(v['params']),
                            bad_steps=jnp.zeros((), jnp.int32),
                            skipped_steps=jnp.zeros((), jnp.int32))

  state = jax.eval_shape(init, jax.random.key(0))
  step = train.make_train_step(module, tx, lr_fn, mesh)
  jaxpr, (new_state, out) = jax.make_jaxpr(step, return_shape=True)(state, train_b)
  return state, new_state, out, jaxpr


def _float_dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _conv_dtypes(jaxpr):
  found = set()

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        found.add(str(eqn.invars[0].aval.dtype))
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (list, tuple)) else [p]):
          if hasattr(sub, 'jaxpr'):
            walk(sub.jaxpr if hasattr(sub.jaxpr, 'eqns') else sub.jaxpr.jaxpr)
          elif hasattr(sub, 'eqns'):
            walk(sub)
  walk(jaxpr.jaxpr)
  return found


@pytest.mark.parametrize('name', NAMES)
def test_bf16_keeps_state_and_losses_float32(name):
  state, new_state, out, jaxpr = _abstract_step(name)
  for part in ('params', 'opt_state', 'batch_stats'):
    for s in (state, new_state):
      dtypes = _float_dtypes(getattr(s, part))
      assert dtypes <= {'float32'}, (name, part, dtypes)
  assert _float_dtypes(new_state.params) == {'float32'}
  losses = {k: v for k, v in out.items() if k.startswith('train/loss') or k == 'train/grad_norm'}
  assert losses and all(v.dtype == jnp.float32 for v in losses.values()), losses
  # The convolutions themselves run in bf16 (forward and backward).
  assert 'bfloat16' in _conv_dtypes(jaxpr), name
