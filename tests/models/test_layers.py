"""detx.models.layers: bf16 layers keep float32-accurate gradients for their biases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.models import layers
from detx.models.heads.mask_head import Deconv2x2


def _grads(module, x, dtype):
  m = module(dtype=dtype)
  v = m.init(jax.random.key(0), x)
  cot = jax.random.normal(jax.random.key(1), m.apply(v, x).shape) + 0.5
  loss = lambda p: jnp.sum(m.apply({'params': p}, x).astype(jnp.float32) * cot)
  return jax.grad(loss)(v['params'])


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize('module', [
    lambda dtype: layers.Conv(8, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype),
    lambda dtype: layers.Dense(8, dtype=dtype),
    lambda dtype: Deconv2x2(8, dtype=dtype),
], ids=['conv', 'dense', 'deconv'])
def test_bf16_bias_gradient_is_accumulated_in_float32(module):
  # 16 x 64 x 64 output positions: a bf16 sum of the bias cotangent (what nn.Conv's
  # bf16 bias gives on XLA's CPU backend) was off by ~90% here.
  x = jax.random.normal(jax.random.key(2), (16, 64, 64, 4))
  g32, g16 = _grads(module, x, jnp.float32), _grads(module, x, jnp.bfloat16)
  assert g16['bias'].dtype == jnp.float32
  assert _rel(g16['bias'], g32['bias']) < 0.01
  assert _rel(g16['kernel'], g32['kernel']) < 0.01
  out = module(jnp.bfloat16).apply({'params': g32}, x)
  assert out.dtype == jnp.bfloat16


def test_bf16_norm_reads_the_conv_unrounded():
  """A bf16 conv + norm: the norm reads the conv's float32 accumulation. A 1x1 conv of
  exact binary inputs with a kernel of sixteenths: each channel's output has a mean near
  86 and a spread near 4, so bf16 rounding of the conv output (steps of 0.5 there) moves
  the normalised values by several percent; unrounded, only the final bf16 rounding
  (~0.4%) remains."""
  from detx.models.backbones.resnet import ConvNorm
  x = (jax.random.uniform(jax.random.key(0), (4, 16, 16, 64)) < 0.9).astype(jnp.float32)
  w = 1.0 + (jnp.arange(64 * 16).reshape(1, 1, 64, 16) % 16) / 16.0
  conv = lambda a, b: jax.lax.conv_general_dilated(
      a, b, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).astype(jnp.float32)
  bn = lambda t: (t - t.mean((0, 1, 2))) / jnp.sqrt(t.var((0, 1, 2)) + 1e-5)
  rounded = bn(conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)))
  assert _rel(rounded, bn(conv(x, w))) > 0.02  # the case discriminates
  for make in (lambda d: layers.ConvBN(16, 1, act='none', dtype=d),
               lambda d: ConvNorm(16, 1, relu=False, norm='bn', freeze_norm=False, dtype=d,
                                  name='res2a_branch2a')):
    v = make(jnp.float32).init(jax.random.key(1), x, train=True)
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: w if 'kernel' in jax.tree_util.keystr(p) else a, v)
    y32, _ = make(jnp.float32).apply(v, x, train=True, mutable=['batch_stats'])
    y16, _ = make(jnp.bfloat16).apply(v, x, train=True, mutable=['batch_stats'])
    # ConvBN (DarkNet, the YOLO head) returns float32: its consumers' convs cast.
    assert y16.dtype == (jnp.float32 if isinstance(make(jnp.float32), layers.ConvBN)
                         else jnp.bfloat16)
    assert _rel(y16, y32) < 0.01
