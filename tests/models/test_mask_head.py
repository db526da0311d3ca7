"""detx.models.heads.mask_head: the matmul transposed conv equals nn.ConvTranspose."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.models.heads.mask_head import Deconv2x2, MaskHead


@pytest.mark.parametrize('shape', [(3, 7, 5, 16), (2, 14, 14, 8)])
def test_deconv2x2_equals_conv_transpose(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = Deconv2x2(12)
  ref = nn.ConvTranspose(12, (2, 2), (2, 2), padding='VALID')
  v = ours.init(jax.random.key(1), x)
  v = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(2), a.shape), v)  # bias too
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, ref.init(jax.random.key(1), x))
  np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(v, x)),
                  jax.tree.leaves(jax.grad(loss(ref), argnums=(0, 1))(v, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_mask_head_shapes_and_bf16():
  x = jnp.ones((2, 14, 14, 32))
  head = MaskHead(5, num_convs=2, conv_dim=16)
  v = head.init(jax.random.key(0), x)
  assert v['params']['conv5_mask']['kernel'].shape == (2, 2, 16, 16)
  out = head.apply(v, x)
  assert out.shape == (2, 28, 28, 5) and out.dtype == jnp.float32
  out16 = MaskHead(5, num_convs=2, conv_dim=16, dtype=jnp.bfloat16).apply(v, x)
  np.testing.assert_allclose(out16, out, rtol=0.05, atol=0.05)
