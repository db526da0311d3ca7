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


# Mixed-precision convs (detx.ops.conv with a float32 input and a bf16 kernel, as
# detx.models.layers builds them): the input gradient must come back float32 and
# unrounded. Compared with lax's float32 conv on the same bf16-representable operands,
# whose products are exact in float32: the two differ by summation order only.
@pytest.mark.parametrize('hw,k,stride,padding', [
    ((9, 8), 3, 1, ((1, 1), (1, 1))),
    ((9, 8), 3, 2, ((1, 1), (1, 1))),    # odd size, strided: a row of x unused
    ((7, 6), 1, 1, ((0, 0), (0, 0))),    # the CPU's matmul path
    ((7, 6), 1, 2, ((0, 0), (0, 0))),
    ((11, 9), 5, 2, ((2, 1), (0, 2))),   # asymmetric padding
])
def test_mixed_conv_input_gradient_is_float32_and_exact(hw, k, stride, padding):
  import numpy as np
  from jax import lax
  from detx.ops import conv
  rng = np.random.default_rng(k + stride)
  bf = lambda a: jnp.asarray(a, jnp.float32).astype(jnp.bfloat16)
  x = bf(rng.standard_normal((2,) + hw + (5,))).astype(jnp.float32)
  w = bf(rng.standard_normal((k, k, 5, 4)))
  dn = ('NHWC', 'HWIO', 'NHWC')
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                              dimension_numbers=dn, precision='highest')
  mixed = lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding,
                                                 dimension_numbers=dn,
                                                 preferred_element_type=jnp.float32)
  y0, vjp0 = jax.vjp(ref, x, w.astype(jnp.float32))
  g = bf(rng.standard_normal(y0.shape)).astype(jnp.float32)
  y, vjp = jax.vjp(mixed, x, w)
  (dx, dw), (dx0, dw0) = vjp(g), vjp0(g)
  assert (y.dtype, dx.dtype, dw.dtype) == (jnp.float32, jnp.float32, jnp.bfloat16)
  np.testing.assert_allclose(y, y0, rtol=1e-6, atol=1e-5)
  # bf16-rounded, as before the fix, dx would differ by up to 2**-9 of its size.
  np.testing.assert_allclose(dx, dx0, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(dw.astype(jnp.float32), dw0, rtol=2**-8, atol=1e-2)


def test_bf16_darknet_stream_is_float32():
  """Under bf16 the convs compute in bf16, but every ConvBN output (the residual stream,
  the head's routes and concats) and its gradient stay float32."""
  from detx.models.layers import ConvBN
  x = jnp.ones((2, 8, 8, 4), jnp.float32)
  m = ConvBN(6, 3, dtype=jnp.bfloat16)
  v = m.init(jax.random.key(0), x, train=False)
  jaxpr = jax.make_jaxpr(lambda v, x: jax.grad(
      lambda x: m.apply(v, x, train=True, mutable=['batch_stats'])[0].sum())(x))(v, x)
  assert _conv_dtypes(jaxpr) == {'bfloat16'}
  y, _ = m.apply(v, x, train=True, mutable=['batch_stats'])
  dx = jax.grad(lambda x: m.apply(v, x, train=True, mutable=['batch_stats'])[0].sum())(x)
  assert (y.dtype, dx.dtype) == (jnp.float32, jnp.float32)


# detx.models.layers passes float32 input and kernel with compute_dtype=bf16: both
# gradients come back float32 and unrounded (exact bf16 products, float32 sums), through
# the one-conv kernel gradient (small convs, GPU and TPU) and the CPU's tap matmuls.
@pytest.mark.parametrize('taps', [False, True])
@pytest.mark.parametrize('hw,k,stride,padding', [
    ((9, 8), 3, 1, ((1, 1), (1, 1))),
    ((9, 8), 3, 2, ((1, 1), (1, 1))),
    ((10, 9), 3, 2, ((0, 1), (1, 0))),   # a row / column no output reads
    ((11, 9), 5, 2, ((2, 1), (0, 2))),
])
def test_compute_dtype_kernel_gradient_is_float32_and_exact(hw, k, stride, padding, taps,
                                                             monkeypatch):
  import numpy as np
  from jax import lax
  from detx.ops import conv
  if taps:
    monkeypatch.setattr(conv, 'TAPS_MIN_WORK', 0)
  rng = np.random.default_rng(k * stride)
  bf = lambda a: jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)
  x, w = bf(rng.standard_normal((2,) + hw + (5,))), bf(rng.standard_normal((k, k, 5, 4)))
  dn = ('NHWC', 'HWIO', 'NHWC')
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                              dimension_numbers=dn, precision='highest')
  mixed = lambda x, w: conv.conv_general_dilated(
      x, w, (stride, stride), padding, dimension_numbers=dn,
      preferred_element_type=jnp.float32, compute_dtype=jnp.bfloat16)
  y0, vjp0 = jax.vjp(ref, x, w)
  g = bf(rng.standard_normal(y0.shape))
  y, vjp = jax.vjp(mixed, x, w)
  (dx, dw), (dx0, dw0) = vjp(g), vjp0(g)
  assert (y.dtype, dx.dtype, dw.dtype) == (jnp.float32,) * 3
  np.testing.assert_allclose(y, y0, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(dx, dx0, rtol=1e-6, atol=1e-5)
  # bf16-rounded (before), dw differed by up to 2**-9 of its size.
  np.testing.assert_allclose(dw, dw0, rtol=1e-6, atol=1e-5)


def test_layers_conv_kernel_gradient_is_float32_in_bf16():
  """layers.Conv and ConvBN in bf16: the kernel's gradient is never rounded to bf16
  (no bf16 -> float32 convert on its way to the parameter)."""
  from detx.models.layers import Conv, ConvBN
  x = jnp.ones((2, 8, 8, 4), jnp.float32)
  for m, kw in ((Conv(6, (3, 3), dtype=jnp.bfloat16), {}),
                (ConvBN(6, 3, dtype=jnp.bfloat16), {'train': True})):
    v = m.init(jax.random.key(0), x, **kw)
    (kshape,) = {p.shape for p in jax.tree.leaves(v['params']) if p.ndim == 4}
    loss = lambda p: m.apply({**v, 'params': p}, x, mutable=['batch_stats'], **kw)[0].sum()
    jaxpr = jax.make_jaxpr(jax.grad(loss))(v['params'])
    assert _conv_dtypes(jaxpr) == {'bfloat16'}
    bf16_to_f32 = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'convert_element_type'
                   and e.invars[0].aval.dtype == jnp.bfloat16
                   and e.invars[0].aval.shape == kshape]
    assert not bf16_to_f32, bf16_to_f32
