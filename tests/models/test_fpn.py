import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from detx.models.necks.fpn import FPN, match_size, retinanet_fpn

RCNN_IN = {2: 256, 3: 512, 4: 1024, 5: 2048}


def _feats(sizes, channels=RCNN_IN, seed=0):
  rng = np.random.default_rng(seed)
  return {lvl: jnp.asarray(rng.normal(size=(1, *sizes[lvl], channels[lvl])), jnp.float32)
          for lvl in sizes}


def _shapes_out(model, feats):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), feats))
  out = jax.eval_shape(lambda v: model.apply(v, feats), variables)
  return variables, {k: v.shape for k, v in out.items()}


@pytest.mark.parametrize('sizes', [
    {2: (16, 16), 3: (8, 8), 4: (4, 4), 5: (2, 2), 6: (1, 1)},
    # An odd input (65x67): backbone maps 17x17, 9x9, 5x5, 3x3, so every upsampled map is
    # one pixel larger than its lateral.
    {2: (17, 17), 3: (9, 9), 4: (5, 5), 5: (3, 3), 6: (2, 2)},
    {2: (9, 25), 3: (5, 13), 4: (3, 7), 5: (2, 4), 6: (1, 2)},  # 33x100
], ids=['64x64', '65x67', '33x100'])
def test_rcnn_fpn_levels_and_shapes(sizes):
  feats = _feats({k: v for k, v in sizes.items() if k <= 5})
  variables, out = _shapes_out(FPN(), feats)
  assert out == {lvl: (1, *s, 256) for lvl, s in sizes.items()}
  assert set(variables['params']) == {
      'fpn_inner_res5_sum', 'fpn_inner_res4_sum_lateral', 'fpn_inner_res3_sum_lateral',
      'fpn_inner_res2_sum_lateral', 'fpn_res5_sum', 'fpn_res4_sum', 'fpn_res3_sum',
      'fpn_res2_sum'}
  assert variables['params']['fpn_inner_res4_sum_lateral']['kernel'].shape == (1, 1, 1024, 256)
  assert variables['params']['fpn_res2_sum']['kernel'].shape == (3, 3, 256, 256)


def test_retinanet_fpn_levels_names_and_shapes():
  sizes = {3: (9, 9), 4: (5, 5), 5: (3, 3)}
  variables, out = _shapes_out(retinanet_fpn(), _feats(sizes))
  assert out == {3: (1, 9, 9, 256), 4: (1, 5, 5, 256), 5: (1, 3, 3, 256),
                 6: (1, 2, 2, 256), 7: (1, 1, 1, 256)}
  p = variables['params']
  assert p['fpn_6']['kernel'].shape == (3, 3, 2048, 256)  # on C5, not P5
  assert p['fpn_7']['kernel'].shape == (3, 3, 256, 256)
  assert 'fpn_res2_sum' not in p and 'fpn_inner_res3_sum_lateral' in p


def _identity_params(feats, c):
  """1x1 convs = identity, 3x3 convs = centre-tap identity, zero biases."""
  model = FPN(num_channels=c)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), feats))

  def fill(path, s):
    if path[-1].key == 'bias':
      return jnp.zeros(s.shape)
    k = np.zeros(s.shape, np.float32)
    kh = s.shape[0] // 2
    k[kh, kh] = np.eye(c)
    return jnp.asarray(k)
  return model, jax.tree_util.tree_map_with_path(fill, shapes)


def test_top_down_numerics_with_odd_sizes():
  c = 3
  sizes = {2: (9, 7), 3: (5, 4), 4: (3, 2), 5: (2, 1)}
  feats = _feats(sizes, {lvl: c for lvl in sizes})
  model, variables = _identity_params(feats, c)
  out = model.apply(variables, feats)
  # numpy reference: P_l = C_l + nearest-2x(P_{l+1}) cropped (top: P5 = C5).
  ref = {5: np.asarray(feats[5])}
  for lvl in (4, 3, 2):
    up = ref[lvl + 1].repeat(2, axis=1).repeat(2, axis=2)
    h, w = sizes[lvl]
    ref[lvl] = np.asarray(feats[lvl]) + up[:, :h, :w]
  for lvl in (2, 3, 4, 5):
    np.testing.assert_allclose(out[lvl], ref[lvl], rtol=1e-5, atol=1e-5)
  # P6: 1x1 max-pool with stride 2 = every other pixel of P5.
  np.testing.assert_allclose(out[6], ref[5][:, ::2, ::2], rtol=1e-6)


def test_xavier_init_bounds():
  feats = _feats({2: (4, 4), 3: (2, 2), 4: (1, 1), 5: (1, 1)})
  params = FPN().init(jax.random.key(0), feats)['params']
  for name, c_in in (('fpn_inner_res5_sum', 2048), ('fpn_inner_res2_sum_lateral', 256)):
    limit = np.sqrt(6 / (c_in + c_in))  # Paddle: Xavier(fan_out=C_in), fan_in = C_in
    k = np.asarray(params[name]['kernel'])
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit
    assert not np.asarray(params[name]['bias']).any()
  limit = np.sqrt(6 / (2 * 9 * 256))
  assert np.abs(np.asarray(params['fpn_res3_sum']['kernel'])).max() <= limit


def test_match_size_crops_and_pads():
  x = jnp.arange(12.).reshape(1, 3, 4, 1)
  assert match_size(x, 2, 3).shape == (1, 2, 3, 1)
  y = match_size(x, 4, 5)
  assert y.shape == (1, 4, 5, 1) and float(y[0, 3, 4, 0]) == 11.0


def test_bad_levels():
  with pytest.raises(ValueError, match='min_level'):
    _shapes_out(FPN(min_level=2), _feats({3: (4, 4), 4: (2, 2), 5: (1, 1)}))
  with pytest.raises(ValueError, match='subsampled'):
    _shapes_out(FPN(max_level=7), _feats({2: (8, 8), 3: (4, 4), 4: (2, 2), 5: (1, 1)}))
