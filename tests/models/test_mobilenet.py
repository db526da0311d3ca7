"""MobileNet-V1 (detx.models.backbones.mobilenet) against PaddleDetection 597145c's
ppdet/modeling/backbones/mobilenet.py: layout, levels, sizes and parameter names.
Shapes and names come from jax.eval_shape (no compute) except the small norm tests."""
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from detx import config as cfg
from detx.models import backbones
from detx.models.backbones import mobilenet
from detx.models.backbones.mobilenet import MobileNetV1
from detx.weights import paddle as pw

X = jnp.zeros((1, 65, 67, 3))  # odd sizes: every stride-2 conv maps n -> ceil(n / 2)
SSD_X = jnp.zeros((1, 300, 300, 3))


def _shapes(model, x=X):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _paddle_layout(extra=False):
  """{Paddle conv name: (kernel, in channels per group, out channels)} transcribed from
  mobilenet.py's __call__ (scale 1): conv1, 13 depthwise-separable blocks, 4 extra blocks."""
  convs = {'conv1': (3, 3, 32)}
  c = 32
  for name, out in (('conv2_1', 64), ('conv2_2', 128), ('conv3_1', 128), ('conv3_2', 256),
                    ('conv4_1', 256), ('conv4_2', 512), ('conv5_1', 512), ('conv5_2', 512),
                    ('conv5_3', 512), ('conv5_4', 512), ('conv5_5', 512), ('conv5_6', 1024),
                    ('conv6', 1024)):
    convs[f'{name}_dw'] = (3, 1, c)  # groups = channels
    convs[f'{name}_sep'] = (1, c, out)
    c = out
  if extra:
    for k, (c1, c2) in enumerate(((256, 512), (128, 256), (128, 256), (64, 128))):
      convs[f'conv7_{k + 1}_extra1'] = (1, c, c1)
      convs[f'conv7_{k + 1}_extra2'] = (3, c1, c2)
      c = c2
  return convs


def test_param_count_and_levels():
  variables = _shapes(MobileNetV1())
  # Keras MobileNet(alpha=1.0) at 224: 4,231,976 trainable - conv_preds (1024*1000 + 1000)
  # = 3,206,976; its 21,888 non-trainable parameters are the BN moving statistics.
  assert _count(variables['params']) == 3_206_976
  assert _count(variables['batch_stats']) == 21_888
  layout = _paddle_layout()
  expected = sum(k * k * cin * cout + 2 * cout for k, cin, cout in layout.values())
  assert _count(variables['params']) == expected
  feats = jax.eval_shape(lambda v: MobileNetV1().apply(v, X), variables)
  assert {k: f.shape for k, f in feats.items()} == {
      3: (1, 9, 9, 256), 4: (1, 5, 5, 512), 5: (1, 3, 3, 1024)}


def test_depthwise_layout_and_paddle_names():
  for extra, levels in ((False, (3, 4, 5)), (True, (4, 5, 6, 7, 8, 9))):
    variables = _shapes(MobileNetV1(extra_blocks=extra, return_levels=levels))
    layout = _paddle_layout(extra)
    mapping, unmapped = pw.paddle_names(variables, pw.RESNET_RULES)
    assert not unmapped
    names = {name for name, _ in mapping.values()}
    assert names == {f'{conv}{suffix}' for conv in layout
                     for suffix in ('_weights', '_bn_scale', '_bn_offset', '_bn_mean',
                                    '_bn_variance')}
    full = traverse_util.flatten_dict(variables)
    flat = {name: full[key] for key, (name, _) in mapping.items()}
    for conv, (k, cin, cout) in layout.items():
      assert flat[f'{conv}_weights'].shape == (k, k, cin, cout), conv  # HWIO; Paddle OIHW
      assert flat[f'{conv}_bn_variance'].shape == (cout,)
  assert pw.KERNEL.to_paddle(np.zeros((3, 3, 1, 32))).shape == (32, 1, 3, 3)


def test_ssd_levels_take_conv5_5_conv6_and_the_extra_blocks():
  model = MobileNetV1(extra_blocks=True, return_levels=(4, 5, 6, 7, 8, 9))
  variables = _shapes(model, SSD_X)
  feats = jax.eval_shape(lambda v: model.apply(v, SSD_X), variables)
  assert {k: f.shape[1:] for k, f in feats.items()} == {
      4: (19, 19, 512), 5: (10, 10, 1024), 6: (5, 5, 512), 7: (3, 3, 256), 8: (2, 2, 256),
      9: (1, 1, 128)}  # Paddle's SSD300 feature maps 19, 10, 5, 3, 2, 1


def test_level_4_is_conv4_2_for_yolo_and_conv5_5_for_ssd():
  """Paddle returns conv4_2's output as YOLOv3's stride-16 map (conv5_1..5 feed level 5
  only), and conv5_5's (module11) as SSD's: only the layers up to it are built."""
  yolo = _shapes(MobileNetV1(return_levels=(4,)))['params']
  assert 'conv4_2' in yolo and 'conv5_1' not in yolo
  ssd = _shapes(MobileNetV1(extra_blocks=True, return_levels=(4,)))['params']
  assert 'conv5_5' in ssd and 'conv5_6' not in ssd
  with pytest.raises(ValueError, match='return_levels'):
    _shapes(MobileNetV1(return_levels=(6,)))
  with pytest.raises(ValueError, match='return_levels'):
    _shapes(MobileNetV1(extra_blocks=True, return_levels=(3,)))


def test_scale_multiplies_every_width():
  variables = _shapes(MobileNetV1(scale=0.25))
  p = variables['params']
  assert p['conv1']['conv']['kernel'].shape == (3, 3, 3, 8)
  assert p['conv6']['conv6_sep']['conv']['kernel'].shape == (1, 1, 256, 256)


def test_batch_norm_trains_and_freeze_norm_masks_it():
  model = MobileNetV1(return_levels=(3,))
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  _, upd = jax.jit(lambda v: model.apply(v, x, train=True, mutable=['batch_stats']))(variables)
  before = variables['batch_stats']['conv1']['conv1_bn']['mean']
  assert not np.allclose(upd['batch_stats']['conv1']['conv1_bn']['mean'], before)
  mask = mobilenet.trainable_mask(variables['params'], freeze_norm=False)
  assert all(jax.tree.leaves(mask))
  mask = mobilenet.trainable_mask(variables['params'], freeze_norm=True)
  assert mask['conv1']['conv']['kernel'] and not mask['conv1']['conv1_bn']['scale']
  assert not mask['conv2_1']['conv2_1_dw']['conv2_1_dw_bn']['bias']


def test_remat_gives_the_same_gradients():
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  plain, remat = MobileNetV1(return_levels=(3,)), MobileNetV1(return_levels=(3,), remat=True)
  variables = jax.jit(plain.init)(jax.random.key(0), x)
  grad = lambda m: jax.jit(jax.grad(lambda v: m.apply(v, x)[3].sum()))(variables)
  np.testing.assert_allclose(jax.flatten_util.ravel_pytree(grad(plain))[0],
                             jax.flatten_util.ravel_pytree(grad(remat))[0], rtol=1e-5, atol=1e-5)


def test_built_by_name_from_the_config():
  c = cfg.load('yolov3_mobilenet_v1')
  b = ml_collections.FrozenConfigDict(c.model.backbone)
  model = backbones.build(b, (3, 4, 5))
  assert isinstance(model, MobileNetV1) and model.norm == 'sync_bn' and not model.freeze_norm
  assert model.extra_blocks is False and model.scale == 1.0
  params = _shapes(model)['params']
  assert all(jax.tree.leaves(backbones.trainable(b)(params)))
