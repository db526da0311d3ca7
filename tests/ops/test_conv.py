import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from detx.ops import conv


def _grads(fn, x, w, g):
  y, vjp = jax.vjp(fn, x, w)
  return (y,) + vjp(g)


@pytest.mark.parametrize('hw,ci,co,k,stride,padding', [
    ((13, 17), 8, 6, 1, 1, 'VALID'),
    ((13, 17), 8, 6, 1, 2, 'VALID'),      # strided 1x1 (ResNet-B shortcut), odd sizes
    ((12, 16), 5, 7, 3, 1, ((1, 1), (1, 1))),
    ((13, 17), 5, 7, 3, 2, ((1, 1), (1, 1))),
    ((12, 16), 4, 3, 3, 2, 'SAME'),        # asymmetric SAME padding
    ((15, 14), 3, 4, 7, 2, ((3, 3), (3, 3))),
    ((9, 11), 4, 4, 3, 1, ((0, 2), (1, 0))),
])
@pytest.mark.parametrize('taps', [True, False])
def test_gradients_match_lax(monkeypatch, hw, ci, co, k, stride, padding, taps):
  # taps=True forces the per-tap matmul kernel gradient even on these small planes.
  monkeypatch.setattr(conv, 'TAPS_MIN_WORK', 0 if taps else 10**18)
  rng = np.random.default_rng(k * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (ci,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, ci, co)), jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)
  new = lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)
  y = ref(x, w)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for a, b in zip(_grads(ref, x, w, g), jax.jit(lambda x, w, g: _grads(new, x, w, g))(x, w, g)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-3)


def test_bfloat16_keeps_dtypes():
  x = jnp.ones((1, 8, 8, 4), jnp.bfloat16)
  w = jnp.ones((1, 1, 4, 3), jnp.bfloat16)
  y, vjp = jax.vjp(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')), x, w)
  dx, dw = vjp(jnp.ones_like(y))
  assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16,) * 3
  np.testing.assert_allclose(np.asarray(dw, np.float32), 64.0)


@pytest.mark.parametrize('hw,c,k,stride,padding', [
    ((12, 16), 6, 3, 1, ((1, 1), (1, 1))),  # MobileNet's depthwise 3x3
    ((13, 17), 5, 3, 2, ((1, 1), (1, 1))),  # strided, odd sizes
    ((12, 16), 4, 3, 2, 'SAME'),             # asymmetric SAME padding
    ((9, 11), 3, 2, 1, ((0, 2), (1, 0))),
])
def test_depthwise_taps_match_lax(hw, c, k, stride, padding):
  rng = np.random.default_rng(k * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (c,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 1, c)), jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                              dimension_numbers=dn, feature_group_count=c)
  new = lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding,
                                               dimension_numbers=dn, feature_group_count=c)
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(new)(x, w))  # the taps ran
  y = ref(x, w)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for a, b in zip(_grads(ref, x, w, g), jax.jit(lambda x, w, g: _grads(new, x, w, g))(x, w, g)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_grouped_and_dilated_convs_fall_back_to_lax():
  x = jnp.ones((1, 8, 8, 4))
  w = jnp.ones((3, 3, 2, 4))  # two groups of two channels: not depthwise
  dn = ('NHWC', 'HWIO', 'NHWC')
  for kw in (dict(feature_group_count=2), ):
    jaxpr = str(jax.make_jaxpr(lambda x: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=dn, **kw))(x))
    assert 'custom_vjp' not in jaxpr and 'conv_general_dilated' in jaxpr
  w2 = jnp.ones((3, 3, 4, 4))
  jaxpr = str(jax.make_jaxpr(lambda x: conv.conv_general_dilated(
      x, w2, (1, 1), 'SAME', rhs_dilation=(2, 2), dimension_numbers=dn))(x))
  assert 'custom_vjp' not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda x: conv.conv_general_dilated(
      x, w2, (1, 1), 'SAME', dimension_numbers=dn))(x))
  assert 'custom_vjp' in jaxpr


def test_flax_conv_same_params_and_values():
  import flax.linen as nn
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 10, 10, 3)), jnp.float32)
  plain = nn.Conv(5, (3, 3), (2, 2))
  fast = nn.Conv(5, (3, 3), (2, 2), conv_general_dilated=conv.conv_general_dilated)
  v = plain.init(jax.random.key(0), x)
  assert jax.tree.structure(v) == jax.tree.structure(fast.init(jax.random.key(0), x))
  np.testing.assert_allclose(fast.apply(v, x), plain.apply(v, x), rtol=1e-6)
