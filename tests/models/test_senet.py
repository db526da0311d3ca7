"""SENet154-vd (detx.models.backbones.senet) and ResNeXt101-vd 64x4d (resnet.ResNet with
groups) against PaddleDetection 597145c (ppdet/modeling/backbones/senet.py, resnext.py,
resnet.py, name_adapter.py): layout, sizes, parameter counts and Paddle names. The two
full nets are only traced (jax.eval_shape); the SE block runs here, a shallow SENet154 /
ResNeXt101 R-CNN step in tests/test_configs.py."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from detx import config as cfg
from detx.models import backbones
from detx.models.backbones import resnet, senet
from detx.models.backbones.resnet import ResNet
from detx.models.backbones.senet import SENet
from detx.weights import paddle as pw

X = jnp.zeros((1, 65, 67, 3))  # odd sizes on purpose
FC1000 = 2048 * 1000 + 1000    # the ImageNet classifier the detection backbones drop


def _shapes(model, x=X):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _paddle_names(variables):
  mapping, unmapped = pw.paddle_names(variables, pw.RESNET_RULES)
  assert not unmapped, unmapped[:5]
  full = traverse_util.flatten_dict(variables)
  return {name: full[key].shape for key, (name, _) in mapping.items()}


@pytest.fixture(scope='module')
def se154():
  return _shapes(SENet(depth=152, variant='d', norm='bn', freeze_norm=False))


def _se154_expected_names():
  """Every Paddle parameter of SENet(depth=152, groups=64, group_width=4, variant='d',
  norm_type='bn'), written out from senet.py / resnet.py / name_adapter.py: {name: shape
  in Paddle's layout}."""
  names = {}

  def conv_norm(name, k, cin, cout, groups=1):
    names[f'{name}_weights'] = (cout, cin // groups, k, k)
    for s in ('scale', 'offset', 'mean', 'variance'):
      names[f'{name}_bn_{s}'] = (cout,)

  conv_norm('conv1_1', 3, 3, 64)
  conv_norm('conv1_2', 3, 64, 64)
  conv_norm('conv1_3', 3, 64, 128)
  cin = 128
  for stage, count in zip((2, 3, 4, 5), (3, 8, 36, 3)):
    f = 256 * 2 ** (stage - 2)  # stage_filters[152]; groups * group_width == 256: expand 1
    for i in range(count):
      n = f'{stage + 2}_{i + 1}'
      conv_norm(f'conv{n}_x1', 1, cin, f)
      conv_norm(f'conv{n}_x2', 3, f, f, groups=64)
      conv_norm(f'conv{n}_x3', 1, f, f)
      if cin != f or (i == 0 and stage != 2):
        conv_norm(f'conv{n}_prj', 1, cin, f)
      names[f'fc{n}_sqz_weights'], names[f'fc{n}_sqz_offset'] = (f, f // 16), (f // 16,)
      names[f'fc{n}_exc_weights'], names[f'fc{n}_exc_offset'] = (f // 16, f), (f,)
      cin = f
  return names


def test_se154_names_shapes_and_rules_cover_everything(se154):
  """Every variable maps to exactly Paddle's parameter list, none left over."""
  got = _paddle_names(se154)
  expected = _se154_expected_names()
  assert set(got) == set(expected)
  to_paddle = {k: tuple(pw.KERNEL.to_paddle(np.zeros(s, np.int8)).shape) for k, s in got.items()}
  assert to_paddle == expected
  assert 'res4/6_36/fc6_36_exc/kernel' in traverse_util.flatten_dict(se154['params'], sep='/')


def test_se154_parameter_count_and_features(se154):
  params, stats = _count(se154['params']), _count(se154['batch_stats'])
  assert params == 119_688_048
  # PaddleClas ImageNet_models.md lists SENet154_vd at 122.03 M parameters: its count
  # holds the BN running statistics and the 1000-way fc as well.
  assert params + stats + FC1000 == 122_032_472
  model = SENet(depth=152, variant='d', norm='bn', freeze_norm=False)
  feats = jax.eval_shape(lambda v: model.apply(v, X), se154)
  assert {k: f.shape for k, f in feats.items()} == {
      2: (1, 17, 17, 256), 3: (1, 9, 9, 512), 4: (1, 5, 5, 1024), 5: (1, 3, 3, 2048)}


def test_x101_vd_64x4d_names_and_parameter_count():
  model = ResNet(depth=101, variant='d', groups=64, group_width=4, norm='bn', freeze_norm=False)
  variables = _shapes(model)
  params, stats = _count(variables['params']), _count(variables['batch_stats'])
  # torchvision resnext101_64x4d: 83,455,272 with its fc; the vd stem (3x3 convs 32, 32,
  # 64 with their norms) has 19,232 more parameters than the 7x7 conv1.
  assert params == 83_455_272 - FC1000 + 19_232 == 81_425_504
  assert params + stats + FC1000 == 83_677_512  # PaddleClas ResNeXt101_vd_64x4d: 83.68 M
  got = _paddle_names(variables)
  # ResNeXt keeps ResNet's names (model type 'ResNeXt': res_conv1 only for variants a/b)
  assert got['conv1_1_weights'] == (3, 3, 3, 32) and got['bnv1_3_variance'] == (64,)
  assert got['res2a_branch2b_weights'] == (3, 3, 4, 256)  # 64 groups of 4
  assert got['res2a_branch2c_weights'] == (1, 1, 256, 256)  # 64 x 4 = 256: expand 1
  assert got['res4b22_branch2c_weights'] == (1, 1, 1024, 1024)
  assert got['res3a_branch1_weights'] == (1, 1, 256, 512)   # after the vd avg-pool
  assert got['bn5c_branch2a_scale'] == (2048,)
  assert not {'res_conv1_weights', 'conv1_weights', 'res4c_branch2a_weights',
              'res2b_branch1_weights'} & set(got)
  assert len([n for n in got if n.endswith('_weights')]) == 3 + 33 * 3 + 4


def test_se_block_equals_numpy_transcription_of_paddle_senet():
  """squeeze_excitation against a numpy transcription of senet.py's
  _squeeze_excitation: global avg-pool, fc + relu, fc + sigmoid, channel scale."""
  import flax.linen as nn

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return senet.squeeze_excitation(x, 'fc4_1', jnp.float32)

  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 64))
  variables = Block().init(jax.random.key(1), x)
  p = variables['params']
  assert p['fc4_1_sqz']['kernel'].shape == (64, 4) and p['fc4_1_exc']['kernel'].shape == (4, 64)
  assert float(jnp.abs(p['fc4_1_sqz']['kernel']).max()) <= 1 / 8  # U(+-1/sqrt(64))
  p = jax.tree.map(lambda a: np.random.default_rng(2).normal(size=a.shape), p)
  xn = np.asarray(x, np.float64)
  pool = xn.mean(axis=(1, 2))
  sq = np.maximum(pool @ p['fc4_1_sqz']['kernel'] + p['fc4_1_sqz']['bias'], 0)
  ex = 1 / (1 + np.exp(-(sq @ p['fc4_1_exc']['kernel'] + p['fc4_1_exc']['bias'])))
  out = Block().apply({'params': p}, x)
  np.testing.assert_allclose(out, xn * ex[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_vd_shortcut_and_strides(monkeypatch):
  """One block per stage: res2's projection is a plain 1x1 (is_first), later ones see a
  2x2 avg-pooled input (vd), and the stride sits on the grouped 3x3 (variant d)."""
  import flax.linen as nn
  monkeypatch.setitem(resnet.BLOCKS, 152, (1, 1, 1, 1))
  model = SENet(depth=152, variant='d')
  x = jnp.zeros((1, 33, 35, 3))
  variables = _shapes(model, x)
  assert set(variables['params']) == {'conv1_1', 'conv1_2', 'conv1_3', 'res2', 'res3', 'res4',
                                      'res5'}
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, resnet.ConvNorm) and context.method_name == '__call__':
      seen[context.module.name] = (args[0].shape[1:3], out.shape[1:])
    return out

  with nn.intercept_methods(record):
    feats = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert {k: f.shape[1:3] for k, f in feats.items()} == {2: (9, 9), 3: (5, 5), 4: (3, 3),
                                                          5: (2, 2)}
  assert seen['conv4_1_prj'] == ((9, 9), (9, 9, 256))   # res2: no pool, stride 1
  assert seen['conv5_1_prj'] == ((5, 5), (5, 5, 512))   # res3: pooled 9 -> 5, then 1x1
  assert seen['conv5_1_x1'] == ((9, 9), (9, 9, 512))    # stride not on the first 1x1
  assert seen['conv5_1_x2'] == ((9, 9), (5, 5, 512))    # but on the grouped 3x3
  assert seen['conv7_1_prj'] == ((2, 2), (2, 2, 2048))


def test_remat_keeps_names_and_gradients_flow(monkeypatch):
  monkeypatch.setitem(resnet.BLOCKS, 152, (1, 1, 1, 1))
  x = jnp.zeros((1, 33, 35, 3))
  plain, remat = SENet(freeze_at=0), SENet(freeze_at=0, remat=True)
  variables = _shapes(plain, x)
  assert jax.tree.structure(_shapes(remat, x)) == jax.tree.structure(variables)
  grads = jax.eval_shape(jax.grad(lambda v: remat.apply(v, x)[5].sum()), variables)
  assert jax.tree.structure(grads) == jax.tree.structure(variables)


def test_trainable_mask_and_freezing():
  params = _shapes(SENet(depth=152, variant='d'))['params']
  mask = resnet.trainable_mask(params, freeze_at=2, freeze_norm=True)
  assert not any(jax.tree.leaves(mask['conv1_1'])) and not any(jax.tree.leaves(mask['res2']))
  block = mask['res3']['5_1']
  assert block['conv5_1_x2']['conv']['kernel'] and block['fc5_1_sqz']['kernel']
  assert block['fc5_1_exc']['bias']
  assert not block['conv5_1_x2']['conv5_1_x2_bn']['scale']  # frozen affine norms


def test_bad_arguments():
  with pytest.raises(ValueError, match='groups'):
    _shapes(SENet(groups=32, group_width=4))
  with pytest.raises(ValueError, match='depth'):
    _shapes(SENet(depth=34))
  with pytest.raises(ValueError, match='return_levels'):
    _shapes(SENet(return_levels=(1,)))


def test_built_by_name_from_the_configs():
  for name, cls in (('faster_rcnn_se154_vd_fpn_s1x', SENet),
                    ('mask_rcnn_x101_vd_64x4d_fpn_1x', ResNet)):
    b = ml_collections.FrozenConfigDict(cfg.load(name).model.backbone)
    model = backbones.build(b, (2, 3, 4, 5))
    assert isinstance(model, cls)
    assert (model.depth, model.variant, model.groups, model.group_width) == (
        152 if cls is SENet else 101, 'd', 64, 4)
    assert (model.norm, model.freeze_norm, model.freeze_at) == ('affine', True, 2)
