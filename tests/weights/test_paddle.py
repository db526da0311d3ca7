"""detx.weights.paddle: name rules, layouts and loading into a model, against real Paddle
1.x files (tests/weights/helpers.py) where paddlepaddle is installed. The file format
itself is tested in test_paddle_io.py."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.models.backbones.darknet import DarkNet
from detx.models.backbones.resnet import ConvNorm
from detx.models.layers import ConvBN
from detx.weights import paddle as pw
from tests.weights.helpers import npz


# ----------------------------------------------------------------------- name rules

class _Pair(nn.Module):
  """A DarkNet-style ConvBN and a ResNet-style ConvNorm under their Paddle prefixes."""
  norm: str = 'bn'

  @nn.compact
  def __call__(self, x):
    y1 = ConvBN(4, 3, name='yolo_input')(x, train=False)
    y2 = ConvNorm(5, 3, 2, norm=self.norm, name='res2a_branch2a')(x)
    return y1, y2


def test_loads_paddle_numerics(paddle_files):
  run = npz(paddle_files / 'run.npz')
  x = jnp.asarray(run['x'].transpose(0, 2, 3, 1))
  model = _Pair()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rules = pw.scoped('yolo_input', pw.DARKNET_RULES) + pw.RESNET_RULES
  variables, report = pw.load_paddle_weights(shapes, paddle_files / 'vars', rules)
  assert report.ok and len(report.loaded) == 10
  assert report.ignored == ['@LR_DECAY_COUNTER@']
  assert report.unexpected == ['fc6_w', 'x64']
  y1, y2 = model.apply(variables, x)
  np.testing.assert_allclose(y1, run['y1'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y2, run['y2'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)

  # The same BN weights folded into AffineChannel (Paddle's load_and_fusebn).
  affine = _Pair(norm='affine')
  shapes = jax.eval_shape(lambda: affine.init(jax.random.key(0), x))
  variables, report = pw.load_paddle_weights(shapes, paddle_files / 'vars', rules,
                                             fuse_norm=True)
  assert report.fused == ['bn2a_branch2a']
  _, y2 = affine.apply(variables, x)
  np.testing.assert_allclose(y2, run['y2'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_load_errors_name_the_file(paddle_files, tmp_path):
  x = jnp.zeros((1, 8, 8, 3))
  model = _Pair()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rules = pw.scoped('yolo_input', pw.DARKNET_RULES) + pw.RESNET_RULES
  arrays = pw.load_paddle_dir(paddle_files / 'vars')
  arrays['bn2a_branch2a_scale'] = np.ones(7, np.float32)
  del arrays['yolo_input.bn.var']
  pw.save_paddle_dir(tmp_path / 'bad', arrays)
  with pytest.raises(pw.WeightLoadError) as e:
    pw.load_paddle_weights(shapes, tmp_path / 'bad', rules)
  msg = str(e.value)
  assert str(tmp_path / 'bad' / 'yolo_input.bn.var') in msg
  assert str(tmp_path / 'bad' / 'bn2a_branch2a_scale') in msg and '(7,)' in msg
  variables, report = pw.load_paddle_weights(shapes, tmp_path / 'bad', rules, strict=False)
  assert [m[0] for m in report.missing] == ['batch_stats/yolo_input/bn/var']
  assert [m[0] for m in report.mismatched] == ['params/res2a_branch2a/bn2a_branch2a/scale']
  assert isinstance(variables['batch_stats']['yolo_input']['bn']['var'], jax.ShapeDtypeStruct)
  # A family without a rule for some variable is an error too.
  with pytest.raises(pw.WeightLoadError, match='unmapped'):
    pw.load_paddle_weights(shapes, paddle_files / 'vars', pw.RESNET_RULES)


def _random_variables(shapes, seed):
  """Random values for an eval_shape'd tree (no jax init: its compiles are slow on CPU);
  positive, so that BN variances are valid."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes)


def test_darknet_round_trip(tmp_path):
  model = DarkNet(depths=(1, 1, 1, 1, 1), width=0.25)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  variables = _random_variables(shapes, 1)
  arrays = pw.export_paddle_weights(variables, pw.DARKNET_RULES)
  assert {'yolo_input.conv.weights', 'yolo_input.bn.offset', 'yolo_input.downsample.bn.var',
          'stage.0.0.0.conv.weights', 'stage.4.0.1.bn.mean', 'stage.3.downsample.bn.scale'
          } <= set(arrays)
  n_vars = len(jax.tree.leaves(variables))
  assert len(arrays) == n_vars
  assert arrays['yolo_input.conv.weights'].shape == (8, 3, 3, 3)  # OIHW
  apply = jax.jit(lambda v: model.apply(v, x, train=False))
  want = apply(variables)
  fresh = _random_variables(shapes, 5)
  pw.save_paddle_weights(variables, tmp_path / 'dir', pw.DARKNET_RULES)
  pw.save_paddle_weights(variables, tmp_path / '__params__', pw.DARKNET_RULES, combined=True)
  for source in (tmp_path / 'dir', tmp_path / '__params__', arrays):
    loaded, report = pw.load_paddle_weights(fresh, source, pw.DARKNET_RULES)
    assert len(report.loaded) == n_vars and not report.unexpected
    for a, b in zip(apply(loaded), want):
      np.testing.assert_array_equal(a, b)


def test_rules_collisions_scoping_and_detectron_names():
  params = {'params': {'backbone': {'conv1': {'conv': {'kernel': np.zeros((7, 7, 3, 64))},
                                              'bn_conv1': {'scale': np.zeros(64),
                                                           'bias': np.zeros(64)}}},
                       'head': {'yolo_output.0': {'conv': {'kernel': np.zeros((1, 1, 8, 9)),
                                                          'bias': np.zeros(9)}},
                                'fpn_res2_sum': {'kernel': np.zeros((3, 3, 4, 4)),
                                                 'bias': np.zeros(4)},
                                'fc6': {'kernel': np.zeros((12, 5)), 'bias': np.zeros(5)}}}}
  rules = (pw.Rule(r'(?P<p>fc6)/kernel', '{p}_w', layout=pw.fc_from_chw(2, 2)),
           *pw.scoped('backbone', pw.RESNET_RULES), *pw.scoped('head', pw.DARKNET_RULES),
           *pw.DETECTRON_RULES)
  mapping, unmapped = pw.paddle_names(params, rules)
  names = {'/'.join(k): n for k, (n, _) in mapping.items()}
  assert not unmapped
  assert names == {
      'params/backbone/conv1/conv/kernel': 'conv1_weights',
      'params/backbone/conv1/bn_conv1/scale': 'bn_conv1_scale',
      'params/backbone/conv1/bn_conv1/bias': 'bn_conv1_offset',
      'params/head/yolo_output.0/conv/kernel': 'yolo_output.0.conv.weights',
      'params/head/yolo_output.0/conv/bias': 'yolo_output.0.conv.bias',
      'params/head/fpn_res2_sum/kernel': 'fpn_res2_sum_w',
      'params/head/fpn_res2_sum/bias': 'fpn_res2_sum_b',
      'params/head/fc6/kernel': 'fc6_w', 'params/head/fc6/bias': 'fc6_b'}
  with pytest.raises(pw.WeightLoadError, match='both map to'):
    pw.paddle_names({'params': {'a': {'conv1': {'conv': {'kernel': 0}}},
                                'b': {'conv1': {'conv': {'kernel': 0}}}}}, pw.RESNET_RULES)


def test_fc_after_chw_flatten_permutation():
  rng = np.random.default_rng(0)
  c, h, w, out = 3, 2, 4, 5
  feat = rng.normal(size=(1, c, h, w))
  paddle_w = rng.normal(size=(c * h * w, out))
  want = feat.reshape(1, -1) @ paddle_w                  # Paddle: CHW flatten
  ours = pw.chw_rows_to_hwc(paddle_w, h, w)
  got = feat.transpose(0, 2, 3, 1).reshape(1, -1) @ ours  # NHWC flatten
  np.testing.assert_allclose(got, want)
  np.testing.assert_array_equal(pw.hwc_rows_to_chw(ours, h, w), paddle_w)
  layout = pw.fc_from_chw(h, w)
  np.testing.assert_array_equal(layout.to_paddle(layout.to_flax(paddle_w)), paddle_w)


def test_deconv_layout_matches_paddle():
  paddle = pytest.importorskip('paddle')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 5, 6)).astype(np.float32)
  w = rng.normal(size=(3, 4, 2, 2)).astype(np.float32)  # conv5_mask: 2x2, stride 2
  want = paddle.nn.functional.conv2d_transpose(
      paddle.to_tensor(x), paddle.to_tensor(w), stride=2).numpy().transpose(0, 2, 3, 1)
  m = nn.ConvTranspose(4, (2, 2), (2, 2), padding='VALID', use_bias=False)
  got = m.apply({'params': {'kernel': pw.DECONV.to_flax(w)}}, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  from detx.models.heads.mask_head import Deconv2x2  # the mask head's conv5_mask
  got = Deconv2x2(4).apply({'params': {'kernel': pw.DECONV.to_flax(w), 'bias': np.zeros(4)}},
                           x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(pw.DECONV.to_paddle(pw.DECONV.to_flax(w)), w)


def test_fuse_bn_formula():
  scale, offset, mean, var = np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([4.0])
  s, b = pw.fuse_bn(scale, offset, mean, var)
  x = np.array([5.0])
  np.testing.assert_allclose(x * s + b, (x - mean) / np.sqrt(var + 1e-5) * scale + offset)


def test_resnet_vd_fpn_names_cover_every_variable():
  from detx.models.backbones.resnet import ResNet
  from detx.models.necks.fpn import FPN
  x = jnp.zeros((1, 64, 64, 3))
  backbone, neck = ResNet(depth=101, variant='d', norm='bn'), FPN()
  bb = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x))
  feats = jax.eval_shape(lambda v: backbone.apply(v, x), bb)
  nk = jax.eval_shape(lambda f: neck.init(jax.random.key(0), f), feats)
  variables = {'params': {'backbone': bb['params'], 'neck': nk['params']},
               'batch_stats': {'backbone': bb['batch_stats']}}
  mapping, unmapped = pw.paddle_names(variables, pw.RESNET_RULES + pw.DETECTRON_RULES)
  assert not unmapped and len(mapping) == len(jax.tree.leaves(variables))
  names = {n for n, _ in mapping.values()}
  assert {'conv1_1_weights', 'bnv1_1_scale', 'bnv1_1_offset', 'bnv1_1_mean',
          'bnv1_1_variance', 'res3a_branch1_weights', 'bn3a_branch1_variance',
          'res4b22_branch2c_weights', 'bn4b22_branch2c_scale', 'res5c_branch2b_weights',
          'fpn_inner_res5_sum_w', 'fpn_inner_res2_sum_lateral_b', 'fpn_res2_sum_w'} <= names
  layouts = {n: lay for n, lay in mapping.values()}
  assert layouts['res5c_branch2b_weights'] is pw.KERNEL and layouts['bnv1_1_mean'] is pw.IDENTITY


def test_file_format_functions_are_reexported():
  from detx.weights import paddle_io
  for name in ('load_paddle_file', 'load_paddle_dir', 'load_paddle_combined', 'save_paddle_file',
               'save_paddle_dir', 'save_paddle_combined', 'PaddleFormatError'):
    assert getattr(pw, name) is getattr(paddle_io, name)
