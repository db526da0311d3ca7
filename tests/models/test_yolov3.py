import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx import config as cfg
from detx.models import yolov3
from detx.models.base import build_model
from detx.models.backbones.darknet import DarkNet
from tests.helpers import compiled


def test_darknet53_feature_shapes_and_param_count():
  model = DarkNet()
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  feats = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert {l: f.shape for l, f in feats.items()} == {3: (1, 8, 8, 256), 4: (1, 4, 4, 512),
                                                   5: (1, 2, 2, 1024)}
  n = sum(np.prod(p.shape) for p in jax.tree.leaves(variables['params']))
  # DarkNet53 without the classifier: 40.58M weights + 2 x BN channels.
  assert 40_000_000 < n < 41_000_000


def test_paddle_prefixes_in_param_names():
  model = DarkNet()
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  names = set(variables['params'])
  assert {'yolo_input', 'yolo_input.downsample', 'stage.0.0.0', 'stage.4.3.1',
          'stage.3.downsample'} <= names
  assert 'stage.4.downsample' not in names


def _quick_config():
  c = cfg.load('quickstart')
  c.model.num_classes = 3
  c.model.backbone.depths = (1, 1, 1, 1, 1)
  c.model.backbone.width = 0.125
  return c


def test_yolov3_losses_and_detect_shapes():
  c = _quick_config()
  module, rules = build_model(c)
  b, n = 2, c.data.max_boxes
  batch = {
      'image': jnp.zeros((b, 64, 64, 3)),
      'boxes': jnp.tile(jnp.array([[0.1, 0.1, 0.5, 0.6]]), (b, n, 1)),
      'classes': jnp.zeros((b, n), jnp.int32),
      'scores': jnp.ones((b, n)),
      'box_mask': jnp.arange(n)[None].repeat(b, 0) < 2,
      'orig_size': jnp.array([[100, 200], [50, 60]], jnp.int32),
  }
  variables = compiled(lambda k: module.init(k, batch, train=False), jax.random.key(0))
  losses, _ = compiled(lambda v: module.apply(v, batch, train=True, mutable=['batch_stats']),
                       variables)
  assert np.isfinite(float(losses['loss']))
  assert set(losses) == {'loss', 'loss_level0', 'loss_level1', 'loss_level2'}
  dets = compiled(lambda v: module.apply(v, batch, train=False), variables)
  k = c.model.nms.keep_top_k
  assert dets['boxes'].shape == (b, k, 4) and dets['valid'].shape == (b, k)
  mask = rules.decay_mask(variables['params'])
  assert mask['head']['yolo_output.0']['conv']['kernel']
  assert not mask['head']['yolo_output.0']['conv']['bias']
  assert not mask['backbone']['yolo_input']['bn']['scale']


def test_max_size_scales_anchors():
  c = cfg.load('yolov3_darknet')
  c.data.max_size = 304
  module, _ = build_model(c)
  assert module.anchors[-1] == pytest.approx((373 / 2, 326 / 2))


def test_remat_gives_the_same_loss_and_gradients():
  c = _quick_config()
  b, n = 2, c.data.max_boxes
  batch = {
      'image': jax.random.normal(jax.random.key(1), (b, 64, 64, 3)),
      'boxes': jnp.tile(jnp.array([[0.1, 0.1, 0.5, 0.6]]), (b, n, 1)),
      'classes': jnp.zeros((b, n), jnp.int32), 'scores': jnp.ones((b, n)),
      'box_mask': jnp.arange(n)[None].repeat(b, 0) < 2,
  }
  out = {}
  for remat in (False, True):
    c.model.remat = remat
    module, _ = build_model(c)
    variables = compiled(lambda b_: module.init(jax.random.key(0), b_, train=False),
                         {**batch, 'orig_size': jnp.full((b, 2), 64)})
    def loss(p):
      l, _ = module.apply({**variables, 'params': p}, batch, train=True, mutable=['batch_stats'])
      return l['loss']
    out[remat] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  np.testing.assert_allclose(out[False][0], out[True][0], rtol=1e-6)
  for a, r in zip(jax.tree.leaves(out[False][1]), jax.tree.leaves(out[True][1])):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)
