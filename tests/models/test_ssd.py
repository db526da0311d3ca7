"""SSD MobileNet-V1: the head's outputs line up with the 1917 priors at 300, the
parameter rules (backbone conv lr x0.1, L2 as Paddle's), RMSProp steps equal to a numpy
transcription of Paddle 1.5's rmsprop op, a tiny model's loss and detections."""
import jax
import jax.numpy as jnp
import numpy as np

from detx import config as cfg
from detx.models.base import build_model
from detx.optim import make_optimizer
from tests.helpers import compiled


def _config(scale=0.25):
  c = cfg.load('ssd_mobilenet_v1_voc')
  c.model.backbone.scale = scale
  return c


def _batch(size, b=2):
  return {'image': jnp.zeros((b, size, size, 3)),
          'boxes': jnp.tile(jnp.array([0.1, 0.1, 0.6, 0.7]), (b, 3, 1)),
          'classes': jnp.ones((b, 3), jnp.int32),
          'box_mask': jnp.array([[True, False, False]] * b),
          'orig_size': jnp.array([[100, 200]] * b, jnp.int32)}


def test_head_outputs_match_priors_at_300():
  module, _ = build_model(_config())
  batch = _batch(300, 1)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), batch, train=False))
  head = jax.eval_shape(lambda v: module.apply(v, batch['image'],
                                                 method=type(module).init_params), variables)
  assert head[0].shape == (1, 1917, 4) and head[1].shape == (1, 1917, 21)
  names = set(variables['params']['head'])
  assert names == {f'conv2d_{k}' for k in range(35, 47)}


def test_param_rules_conv_lr_and_decay():
  c = _config()
  module, rules = build_model(c)
  v = jax.eval_shape(lambda: module.init(jax.random.key(0), _batch(64), train=False))
  p = v['params']
  lr, decay = rules.lr_mult(p), rules.decay_mask(p)
  bb = lr['backbone']
  assert bb['conv1']['conv']['kernel'] == 0.1
  assert bb['conv1']['conv1_bn']['scale'] == 1.0
  assert lr['head']['conv2d_35']['kernel'] == 1.0 and lr['head']['conv2d_35']['bias'] == 1.0
  assert decay['head']['conv2d_36']['bias'] and decay['backbone']['conv1']['conv']['kernel']
  assert not decay['backbone']['conv1']['conv1_bn']['bias']


def test_rmsprop_equals_numpy_transcription_of_paddle_rmsprop():
  """rmsprop_op: ms = rho ms + (1 - rho) g^2; mom = mu mom + lr g / sqrt(ms + eps); p -= mom,
  with g the gradient plus the L2 term and lr the scheduled lr x the parameter's multiplier."""
  from detx.optim import ParamRules
  c = _config()
  rules = ParamRules(lambda p: {'w': True, 'b': False}, lambda p: {'w': 0.1, 'b': 1.0})
  tx, lr_fn = make_optimizer(c, rules)
  params = {'w': jnp.array([0.5, -1.0]), 'b': jnp.array([2.0])}
  state = tx.init(params)
  ms = {k: np.zeros_like(v) for k, v in params.items()}
  ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
  mult, wd = {'w': 0.1, 'b': 1.0}, {'w': 5e-5, 'b': 0.0}
  for step, g in enumerate([{'w': [0.3, -0.2], 'b': [1.0]}, {'w': [0.1, 0.4], 'b': [-0.5]}]):
    g = {k: jnp.asarray(x) for k, x in g.items()}
    upd, state = tx.update(g, state, params)
    lr = float(lr_fn(step))
    params = jax.tree.map(lambda p, u: p - lr * u, params, upd)
    for k in ref:
      gk = np.asarray(g[k], np.float64) + wd[k] * ref[k]
      ms[k] = 0.95 * ms[k] + 0.05 * gk * gk
      ref[k] = ref[k] - lr * mult[k] * gk / np.sqrt(ms[k] + 1e-6)
  for k in ref:
    np.testing.assert_allclose(params[k], ref[k], rtol=1e-5)
  assert [float(lr_fn(s)) for s in (0, 9999, 10000, 15000, 20000, 25000, 27999)] == \
      pytest_approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1e-4, 1e-5, 1e-5])


def pytest_approx(values):
  import pytest
  return pytest.approx(values, rel=1e-6)


def test_tiny_ssd_loss_and_detections():
  c = _config(0.25)
  c.model.num_classes = 3
  module, _ = build_model(c)
  batch = _batch(64)
  init = lambda k: module.init(k, batch['image'], method=type(module).init_params)
  variables = compiled(init, jax.random.key(0))
  losses, _ = compiled(lambda v: module.apply(v, batch, train=True, mutable=['batch_stats']),
                       variables)
  assert np.isfinite(losses['loss']) and losses['num_pos'] >= 2
  dets = compiled(lambda v: module.apply(v, batch, train=False), variables)
  assert dets['boxes'].shape == (2, 200, 4) and dets['valid'].any()
  b = np.asarray(dets['boxes'])[np.asarray(dets['valid'])]
  assert (b[:, [0, 2]] <= 200).all() and (b[:, [1, 3]] <= 100).all() and (b >= 0).all()
  assert set(np.asarray(dets['classes'])[np.asarray(dets['valid'])]) <= {0, 1, 2}


def test_voc_eval_scores_ssd_boxes_as_paddle_normalised():
  """Paddle scored SSD's normalised boxes with IoU without the +1 pixel (YOLOv3's pixel
  boxes with it): a 5.5-px box shifted by 2 px has IoU 3.5 / 7.5 = 0.47 (a miss) without,
  4.5 / 8.5 = 0.53 (a match) with."""
  from detx.evaluation.voc import dataset_evaluator

  class Voc:
    name, num_images, num_classes, image_ids = 'voc', 1, 20, [0]

    def __len__(self):
      return 1

    def annotations(self, i):
      return dict(image_id=0, boxes=np.array([[0., 0., 5.5, 5.5]]), labels=np.array([3]),
                  difficult=np.array([False]))

  maps = {}
  for name in ('ssd_mobilenet_v1_voc', 'yolov3_mobilenet_v1_voc'):
    ev = dataset_evaluator(cfg.load(name), Voc())
    ev.add([0], np.array([[[2., 0., 7.5, 5.5]]]), np.array([[0.9]]), np.array([[3]]),
           np.array([[True]]))
    maps[name] = ev.evaluate()['voc/mAP']
  assert maps == {'ssd_mobilenet_v1_voc': 0.0, 'yolov3_mobilenet_v1_voc': 1.0}


def test_workdir_refuses_an_optimizer_switch():
  from detx.workdir import defines_state
  assert defines_state('optim.name', 'rmsprop', 'momentum')
  assert defines_state('optim.name', None, 'rmsprop')
  assert not defines_state('optim.name', None, 'momentum')
  assert not defines_state('optim.rho', 0.95, 0.9)
