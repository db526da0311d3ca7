import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from detx.models.backbones import resnet
from detx.models.backbones.resnet import ConvNorm, ResNet, ResNetStage, count_params


def _shapes(model, x, **kw):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kw))


def _random_variables(shapes, seed=0):
  """Random values for an eval_shape'd tree (jax init compiles slowly on a CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes)


def _names(variables, collection='params'):
  return set(traverse_util.flatten_dict(variables[collection], sep='/'))


def _modules(variables):
  return {k for path in traverse_util.flatten_dict(variables['params']) for k in path}


X = jnp.zeros((1, 65, 67, 3))  # odd sizes on purpose


@pytest.mark.parametrize('depth,variant,lo,hi', [
    (50, 'b', 23.45e6, 23.55e6),    # torchvision R50 without fc: 23.508M
    (101, 'b', 42.45e6, 42.55e6),   # 42.500M
    (50, 'd', 23.50e6, 23.55e6),    # + the three-conv stem
])
def test_param_counts_and_feature_shapes(depth, variant, lo, hi):
  model = ResNet(depth=depth, variant=variant)
  variables = _shapes(model, X)
  assert lo < count_params(variables['params']) < hi
  feats = jax.eval_shape(lambda v: model.apply(v, X), variables)
  # Every stride-2 step (convs, max-pool, vd avg-pool) maps n -> ceil(n / 2).
  assert {k: f.shape for k, f in feats.items()} == {
      2: (1, 17, 17, 256), 3: (1, 9, 9, 512), 4: (1, 5, 5, 1024), 5: (1, 3, 3, 2048)}


def test_basic_blocks_and_res2a_projection_quirk():
  for depth in (18, 34):
    model = ResNet(depth=depth, return_levels=(3, 5))
    variables = _shapes(model, X)
    feats = jax.eval_shape(lambda v: model.apply(v, X), variables)
    assert {k: f.shape[-1] for k, f in feats.items()} == {3: 128, 5: 512}
    mods = _modules(variables)
    assert 'res2a_branch1' in mods and 'res2b_branch1' not in mods  # channels match, yet
    assert 'res2a_branch2c' not in mods
  # 18: 11.177M (torchvision without fc) + the 64x64 res2a_branch1 and its affine.
  assert count_params(_shapes(ResNet(depth=18), X)['params']) == 11_176_512 + 64 * 64 + 128


def test_c4_returns_res4_only_and_builds_no_res5():
  model = ResNet(depth=50, return_levels=(4,))
  variables = _shapes(model, X)
  assert 'res5' not in variables['params']
  feats = jax.eval_shape(lambda v: model.apply(v, X), variables)
  assert list(feats) == [4] and feats[4].shape == (1, 5, 5, 1024)


def test_paddle_names():
  b = _modules(_shapes(ResNet(depth=101), X))
  assert {'conv1', 'bn_conv1', 'res2a_branch2a', 'bn2a_branch2a', 'res2a_branch1',
          'res4a', 'res4b1', 'res4b22', 'bn4b22_branch2c', 'res5c_branch2c'} <= b
  assert not {'res4c', 'res4b23', 'conv1_1', 'res2b_branch1'} & b
  d = _modules(_shapes(ResNet(depth=50, variant='d'), X))
  assert {'conv1_1', 'conv1_2', 'conv1_3', 'bnv1_1', 'bnv1_3', 'res4f', 'res3a_branch1'} <= d
  assert 'conv1' not in d
  names = _names(_shapes(ResNet(depth=50, variant='d', norm='bn'), X), 'batch_stats')
  assert 'res3/res3a/res3a_branch1/bn3a_branch1/var' in names
  assert resnet.paddle_norm_name('conv1') == 'bn_conv1'
  assert resnet.paddle_norm_name('res5c_branch2b') == 'bn5c_branch2b'
  assert resnet.block_name(4, 35, 36) == 'res4b35' and resnet.block_name(3, 7, 8) == 'res3h'


def _convnorm_io(model, variables, x):
  """{ConvNorm name: (input shape, output shape)} for one apply."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, ConvNorm) and context.method_name == '__call__':
      seen[context.module.name] = (args[0].shape, out.shape)
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: model.apply(v, x), variables)
  return seen


def test_vd_shortcut_avg_pools_first_and_strides_per_variant():
  x = jnp.zeros((1, 64, 64, 3))
  io = {}
  for v in 'abd':
    model = ResNet(depth=50, variant=v, return_levels=(3,))
    io[v] = _convnorm_io(model, _shapes(model, x), x)
  block_in = (1, 16, 16, 256)
  # 'b': the 1x1 shortcut conv strides itself; 'd': a 2x2 avg-pool halves first, then 1x1/1.
  assert io['b']['res3a_branch1'] == (block_in, (1, 8, 8, 512))
  assert io['d']['res3a_branch1'] == ((1, 8, 8, 256), (1, 8, 8, 512))
  # res2's projection never pools.
  assert io['d']['res2a_branch1'][0] == (1, 16, 16, 64)
  # The bottleneck stride: on the 3x3 for 'b'/'d', on the first 1x1 for 'a'.
  assert io['b']['res3a_branch2a'][1][1] == 16 and io['b']['res3a_branch2b'][1][1] == 8
  assert io['a']['res3a_branch2a'][1][1] == 8
  assert io['d']['conv1_1'] == ((1, 64, 64, 3), (1, 32, 32, 32))
  assert io['d']['conv1_3'][1] == (1, 32, 32, 64)


def _avg_pool_reference(x):
  """2x2/2, pad 0, ceil_mode, exclusive, on NHWC."""
  n, h, w, c = x.shape
  oh, ow = -(-h // 2), -(-w // 2)
  out = np.zeros((n, oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
  return out


def test_avg_pool_ceil_exclusive_on_odd_sizes():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  got = np.asarray(resnet.avg_pool_ceil_exclusive(jnp.asarray(x)))
  assert got.shape == (2, 3, 4, 3)
  np.testing.assert_allclose(got, _avg_pool_reference(x), rtol=1e-6)
  # The corner window holds one pixel: exclusive averaging returns it unchanged.
  np.testing.assert_allclose(got[:, -1, -1], x[:, -1, -1], rtol=1e-6)


def test_avg_pool_matches_paddle():
  paddle = pytest.importorskip('paddle')
  x = np.random.default_rng(1).normal(size=(1, 3, 7, 5)).astype(np.float32)
  want = paddle.nn.functional.avg_pool2d(paddle.to_tensor(x), 2, 2, 0, ceil_mode=True,
                                         exclusive=True).numpy().transpose(0, 2, 3, 1)
  got = resnet.avg_pool_ceil_exclusive(jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  want = paddle.nn.functional.max_pool2d(paddle.to_tensor(x), 3, 2, 1).numpy()
  np.testing.assert_allclose(resnet.max_pool_3x3_s2(jnp.asarray(x.transpose(0, 2, 3, 1))),
                             want.transpose(0, 2, 3, 1), rtol=1e-6)


def _grad_norms(model, x):
  variables = _random_variables(_shapes(model, x))
  loss = lambda p: sum(jnp.sum(f) for f in model.apply({'params': p}, x).values())
  grads = jax.jit(jax.grad(loss))(variables['params'])
  return {k: float(jnp.abs(g).sum())
          for k, g in traverse_util.flatten_dict(grads, sep='/').items()}


def test_freeze_at_and_freeze_norm_block_gradients():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
  g = _grad_norms(ResNet(depth=18, freeze_at=2, return_levels=(2, 3)), x)
  frozen = [k for k in g if k.startswith(('conv1/', 'res2/'))]
  assert frozen and all(g[k] == 0 for k in frozen)
  assert all(g[k] == 0 for k in g if k.endswith(('scale', 'bias')))  # frozen affine
  assert all(g[k] > 0 for k in g if k.startswith('res3/') and k.endswith('kernel'))
  g = _grad_norms(ResNet(depth=18, freeze_at=0, freeze_norm=False, return_levels=(2,)), x)
  assert g['conv1/conv/kernel'] > 0 and g['conv1/bn_conv1/scale'] > 0


def test_trainable_mask():
  params = _shapes(ResNet(depth=18, variant='d'), X)['params']
  mask = traverse_util.flatten_dict(resnet.trainable_mask(params, freeze_at=2), sep='/')
  assert not mask['conv1_1/conv/kernel'] and not mask['res2/res2a/res2a_branch1/conv/kernel']
  assert mask['res3/res3a/res3a_branch2a/conv/kernel']
  assert not mask['res3/res3a/res3a_branch2a/bn3a_branch2a/scale']
  mask = traverse_util.flatten_dict(
      resnet.trainable_mask(params, freeze_at=0, freeze_norm=False), sep='/')
  assert all(mask.values())


def test_batch_norm_frozen_uses_running_stats_and_trains_otherwise():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 64)), jnp.float32)
  frozen = ResNetStage(stage=3, depth=18, norm='bn', freeze_norm=True)
  variables = _random_variables(_shapes(frozen, x))
  np.testing.assert_allclose(frozen.apply(variables, x, train=True),
                             frozen.apply(variables, x, train=False), rtol=1e-6)
  live = ResNetStage(stage=3, depth=18, norm='sync_bn', freeze_norm=False)
  _, updates = live.apply(variables, x, train=True, mutable=['batch_stats'])
  before = traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  after = traverse_util.flatten_dict(updates['batch_stats'], sep='/')
  assert before.keys() == after.keys()
  assert any(not np.allclose(before[k], after[k]) for k in before)


def test_c5_head_on_rois_shares_res5_names():
  rois = jnp.zeros((3, 14, 14, 1024))
  head = ResNetStage(stage=5, depth=50, variant='d')
  head_vars = _shapes(head, rois)
  out = jax.eval_shape(lambda v: head.apply(v, rois), head_vars)
  assert out.shape == (3, 7, 7, 2048)
  backbone = _shapes(ResNet(depth=50, variant='d'), X)['params']['res5']
  flat = lambda t: {k: v.shape for k, v in traverse_util.flatten_dict(t, sep='/').items()}
  assert flat(head_vars['params']) == flat(backbone)


def test_resnext101_vd_64x4d():
  model = ResNet(depth=101, variant='d', groups=64, group_width=4, norm='bn')
  variables = _shapes(model, X)
  p = variables['params']
  assert p['res2']['res2a']['res2a_branch2b']['conv']['kernel'].shape == (3, 3, 4, 256)
  assert p['res5']['res5c']['res5c_branch2a']['conv']['kernel'].shape == (1, 1, 2048, 2048)
  assert 81.3e6 < count_params(p) < 81.6e6  # torchvision resnext101_64x4d without fc: 81.41M
  feats = jax.eval_shape(lambda v: model.apply(v, X), variables)
  assert [f.shape[-1] for f in feats.values()] == [256, 512, 1024, 2048]


def test_bad_arguments():
  with pytest.raises(ValueError, match='depth'):
    _shapes(ResNet(depth=42), X)
  with pytest.raises(ValueError, match='return_levels'):
    _shapes(ResNet(return_levels=(1, 2)), X)
  with pytest.raises(ValueError, match='norm'):
    _shapes(ResNet(depth=18, norm='gn'), X)


@pytest.mark.parametrize('norm', ['affine', 'bn'])
def test_remat_gives_the_same_features_and_gradients(monkeypatch, norm):
  monkeypatch.setitem(resnet.BLOCKS, 50, (1, 2, 1, 1))
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  out = {}
  for remat in (False, True):
    model = ResNet(50, 'd', norm, freeze_norm=False, freeze_at=0, remat=remat)
    variables = model.init(jax.random.key(0), x)

    def loss(p):
      feats, _ = model.apply({**variables, 'params': p}, x, True, mutable=['batch_stats'])
      return sum(jnp.mean(f ** 2) for f in feats.values())
    out[remat] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  np.testing.assert_allclose(out[False][0], out[True][0], rtol=1e-6)
  flat = [traverse_util.flatten_dict(out[r][1]) for r in (False, True)]
  assert flat[0].keys() == flat[1].keys()  # same parameter paths (checkpoints, Paddle names)
  for k in flat[0]:
    np.testing.assert_allclose(flat[0][k], flat[1][k], rtol=2e-3, atol=1e-6, err_msg=str(k))


@pytest.mark.parametrize('name', ['faster_rcnn_r50_fpn_1x', 'retinanet_r50_fpn_1x'])
def test_detectors_pass_remat_to_their_backbone(name):
  from detx import config as cfg
  from detx.models.base import build_model
  c = cfg.load(name)
  c.model.remat = True
  module, _ = build_model(c)
  assert module.cfg.remat
  from detx.models import backbones
  assert backbones.build(c.model.backbone, (3, 4, 5), remat=module.cfg.remat).remat
  params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                              method=type(module).init_params))['params']
  assert 'res3' in params['backbone']  # the remat-wrapped stages keep their names
