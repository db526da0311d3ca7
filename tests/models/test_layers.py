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
