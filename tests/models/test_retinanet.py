"""RetinaNet: Paddle names and shapes, initialisation, optimizer rules, the grouped loss
against a numpy transcription of Paddle's RetinaHead.get_loss, and a shallow model fitting one synthetic image
(detx.models.retinanet, detx.models.heads.retina)."""
import math

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from detx import config as cfg
from detx.models import retinanet
from detx.models.base import build_model
from detx.models.backbones import resnet
from detx.models.heads import retina
from detx.weights import paddle as pw
from tests.ops.test_losses import _focal_reference
from tests.ops.test_retina import _assign_reference

SIGMA = 3.0151134457776365


def _abstract_params(module, size=128):
  init = lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                             method=type(module).init_params)
  return jax.eval_shape(init)['params']


@pytest.mark.parametrize('name,depth', [('retinanet_r50_fpn_1x', 50),
                                        ('retinanet_r101_fpn_1x', 101)])
def test_paddle_names_and_shapes(name, depth):
  module, rules = build_model(cfg.load(name))
  assert rules.paddle == retinanet.paddle_rules()
  params = _abstract_params(module)
  mapping, unmapped = pw.paddle_names({'params': params}, rules.paddle)
  assert unmapped == []
  leaves = traverse_util.flatten_dict({'params': params})
  shapes = {n: tuple(layout.to_paddle(np.zeros(leaves[k].shape, np.float32)).shape)
            for k, (n, layout) in mapping.items()}
  expected = {
      'retnet_cls_conv_n0_fpn3_w': (256, 256, 3, 3), 'retnet_cls_conv_n3_fpn3_b': (256,),
      'retnet_bbox_conv_n2_fpn3_w': (256, 256, 3, 3), 'retnet_cls_pred_fpn3_w': (720, 256, 3, 3),
      'retnet_cls_pred_fpn3_b': (720,), 'retnet_bbox_pred_fpn3_w': (36, 256, 3, 3),
      'retnet_bbox_pred_fpn3_b': (36,), 'fpn_6_w': (256, 2048, 3, 3), 'fpn_7_w': (256, 256, 3, 3),
      'fpn_7_b': (256,), 'fpn_inner_res5_sum_w': (256, 2048, 1, 1),
      'fpn_inner_res3_sum_lateral_w': (256, 512, 1, 1), 'fpn_res3_sum_w': (256, 256, 3, 3),
      'res5c_branch2c_weights': (2048, 512, 1, 1), 'bn_conv1_scale': (64,)}
  for n, shape in expected.items():
    assert shapes.get(n) == shape, (n, shapes.get(n))
  assert sum(n.startswith('retnet_') for n in shapes) == 20  # 2 towers x 4 convs + 2 preds, w/b
  assert not any(n.startswith(('fpn_inner_res2', 'fpn_res2', 'fpn_res6', 'conv_rpn'))
                 for n in shapes)
  assert ('res4b22_branch2c_weights' in shapes) == (depth == 101)


def test_head_runs_like_paddle_with_its_weights():
  """The head's variables exported by Paddle name and layout, run as Paddle's RetinaHead
  does (NCHW convs, then transpose to NHWC and reshape to [N, H * W * A, C]), give the
  same per-anchor logits and deltas as detx's flattened outputs."""
  paddle = pytest.importorskip('paddle')
  import paddle.nn.functional as F
  classes, ch = 5, 16
  module = retina.RetinaHead(classes, 9, ml_collections.ConfigDict(
      dict(channels=ch, num_convs=2, prior_prob=0.01)))
  rng = np.random.default_rng(0)
  feats = [rng.normal(size=(2, 6, 5, ch)).astype(np.float32),
           rng.normal(size=(2, 3, 3, ch)).astype(np.float32)]
  params = module.init(jax.random.key(0), [jnp.asarray(f) for f in feats])['params']
  params = jax.tree.map(lambda p: p + 0.05 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                        params)  # non-trivial biases
  mapping, unmapped = pw.paddle_names({'params': params}, retinanet.paddle_rules())
  assert unmapped == []
  leaves = traverse_util.flatten_dict({'params': params})
  w = {n: paddle.to_tensor(layout.to_paddle(np.asarray(leaves[k])))
       for k, (n, layout) in mapping.items()}
  outs = module.apply({'params': params}, [jnp.asarray(f) for f in feats])
  logits, deltas = retina.flatten_levels(outs, classes)

  def conv(x, name):
    return F.conv2d(x, w[name + '_w'], w[name + '_b'], padding=1)

  for lvl, f in enumerate(feats):
    x = paddle.to_tensor(f.transpose(0, 3, 1, 2))
    outs = {}
    for kind in ('cls', 'bbox'):
      h = x
      for i in range(2):
        h = F.relu(conv(h, f'retnet_{kind}_conv_n{i}_fpn3'))
      pred = conv(h, f'retnet_{kind}_pred_fpn3').transpose([0, 2, 3, 1])
      outs[kind] = pred.reshape([2, -1, classes if kind == 'cls' else 4]).numpy()
    np.testing.assert_allclose(logits[lvl], outs['cls'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(deltas[lvl], outs['bbox'], rtol=1e-4, atol=1e-5)


def test_head_init_and_optimizer_rules():
  module = retina.RetinaHead(5, 9, ml_collections.ConfigDict(
      dict(channels=16, num_convs=4, prior_prob=0.01)))
  feats = [jnp.ones((1, 4, 4, 8)), jnp.ones((1, 2, 2, 8))]
  params = module.init(jax.random.key(0), feats)['params']
  pred_b = params['retnet_cls_pred_fpn3']['bias']
  np.testing.assert_allclose(pred_b, -math.log(99.0) * np.ones(45), rtol=1e-6)
  assert np.all(params['retnet_bbox_pred_fpn3']['bias'] == 0)
  w = np.asarray(params['retnet_cls_conv_n0_fpn3']['kernel'])
  assert abs(w.std() - 0.01) < 0.002 and abs(w.mean()) < 0.002
  outs = module.apply({'params': params}, feats)
  assert [o[0].shape for o in outs] == [(1, 4, 4, 45), (1, 2, 2, 45)]
  assert [o[1].shape for o in outs] == [(1, 4, 4, 36), (1, 2, 2, 36)]

  c = cfg.load('retinanet_r50_fpn_1x')
  full, rules = build_model(c)
  params = _abstract_params(full, 64)
  lr = traverse_util.flatten_dict(rules.lr_mult(params), sep='/')
  decay = traverse_util.flatten_dict(rules.decay_mask(params), sep='/')
  assert lr['head/retnet_cls_pred_fpn3/bias'] == 2.0 and lr['neck/fpn_6/bias'] == 2.0
  assert lr['head/retnet_cls_pred_fpn3/kernel'] == 1.0
  assert lr['backbone/res2/res2a/res2a_branch2a/conv/kernel'] == 0.0
  assert lr['backbone/res3/res3a/res3a_branch2a/conv/kernel'] == 1.0
  assert decay['head/retnet_bbox_conv_n0_fpn3/kernel'] and not decay['neck/fpn_7/bias']
  assert c.optim.base_lr == 0.01 and c.train.batch_size == 16 and c.train.steps == 90000
  assert c.optim.schedule.preset == '1x' and c.data.pad_multiple == 128


def _loss_case(seed, n=4, classes=3):
  """Random head outputs on two small levels and GTs per image (one image without any)."""
  rng = np.random.default_rng(seed)
  shapes, strides = [(8, 8), (4, 4)], [8.0, 16.0]
  anchors = retina.level_anchors(shapes, strides)
  outs = [(jnp.asarray(rng.normal(size=(n, h, w, 9 * classes)) * 2, jnp.float32),
           jnp.asarray(rng.normal(size=(n, h, w, 36)) * 0.3, jnp.float32)) for h, w in shapes]
  g = 4
  xy = rng.uniform(0, 40, (n, g, 2))
  gt = np.concatenate([xy, xy + rng.uniform(10, 30, (n, g, 2))], -1).astype(np.float32)
  valid = rng.uniform(size=(n, g)) < 0.8
  valid[1] = False
  crowd = np.zeros((n, g), bool)
  crowd[0, 0] = True
  labels = rng.integers(1, classes + 1, (n, g)).astype(np.int32)
  return outs, anchors, gt, labels, valid, crowd


@pytest.mark.parametrize('group', [2, 1, 4])
def test_loss_equals_numpy_transcription_of_paddle_get_loss(group):
  """Against a numpy transcription of Paddle's RetinaHead.get_loss (paddle not run).
  Per group of images (Paddle: one GPU): gather the assigned rows, focal loss with
  fg_num = the group's summed ForegroundNumber, smooth-L1 / fg_num; groups averaged."""
  n, classes = 4, 3
  outs, anchors, gt, labels, valid, crowd = _loss_case(0, n, classes)
  got = retina.retina_losses(outs, anchors, jnp.asarray(gt), jnp.asarray(labels),
                             jnp.asarray(valid), jnp.asarray(crowd), classes,
                             group_images=group)
  all_anchors = np.concatenate([np.asarray(a) for a in anchors])
  logits = np.concatenate([np.asarray(l).reshape(n, -1, classes) for l, _ in outs], 1)
  deltas = np.concatenate([np.asarray(d).reshape(n, -1, 4) for _, d in outs], 1)
  cls_total, box_total = 0.0, 0.0
  for start in range(0, n, group):
    refs = [_assign_reference(all_anchors, gt[i], labels[i], valid[i], crowd[i], 0.5, 0.4)
            for i in range(start, start + group)]
    fg_num = sum(r[4] for r in refs)
    x = np.concatenate([logits[start + k][r[1]] for k, r in enumerate(refs)])
    lbl = np.concatenate([np.asarray(r[2], int) for r in refs])
    cls_total += _focal_reference(x, lbl, fg_num, 2.0, 0.25)[0].sum()
    d = np.concatenate([deltas[start + k][r[0]] for k, r in enumerate(refs)])
    t = np.concatenate([r[3] for r in refs])
    diff = np.abs(d - t)
    s2 = SIGMA ** 2
    box_total += np.where(diff < 1 / s2, 0.5 * s2 * diff ** 2, diff - 0.5 / s2).sum() / fg_num
  groups = n // group
  np.testing.assert_allclose(float(got['loss_cls']), cls_total / groups, rtol=1e-5)
  np.testing.assert_allclose(float(got['loss_bbox']), box_total / groups, rtol=1e-5)


def _scene():
  """One 128 x 128 image: a bright rectangle of class 2 and a dark one of class 0."""
  img = np.zeros((1, 128, 128, 3), np.float32)
  img[0, 20:60, 30:90] = 0.5
  img[0, 70:120, 10:50] = -0.5
  boxes = np.zeros((1, 4, 4), np.float32)
  boxes[0, 0] = [30, 20, 89, 59]
  boxes[0, 1] = [10, 70, 49, 119]
  return {'image': jnp.asarray(img), 'boxes': jnp.asarray(boxes),
          'classes': jnp.array([[2, 0, 0, 0]], jnp.int32),
          'is_crowd': jnp.zeros((1, 4), bool), 'box_mask': jnp.array([[1, 1, 0, 0]], bool),
          'image_hw': jnp.array([[128, 128]], jnp.int32), 'scale': jnp.array([0.5], jnp.float32)}


@pytest.mark.slow  # ~45 s on 2 CPU cores, mostly compiling
def test_shallow_model_fits_one_image():
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(resnet.BLOCKS, 50, (1, 1, 1, 1))
    c = cfg.load('retinanet_r50_fpn_1x')
    c.model.num_classes = 3
    c.model.head.update(num_convs=1, channels=64)
    c.model.nms.keep_top_k = 10
    c.model.anchor_scale = 0.5
    module = build_model(c)[0]
    batch = _scene()
    train_b = {k: batch[k] for k in module.TRAIN_KEYS}
    eval_b = {k: batch[k] for k in module.EVAL_KEYS}
    params = jax.jit(lambda k: module.init(k, batch['image'], method=type(module).init_params))(
        jax.random.key(0))['params']
    tx = optax.adam(2e-3)

    @jax.jit
    def step(p, s):
      def loss_fn(q):
        losses = module.apply({'params': q}, train_b, train=True)
        return losses['loss'], losses
      (_, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s, parts

    state = tx.init(params)
    history = []
    for _ in range(100):
      params, state, parts = step(params, state)
      history.append({k: float(v) for k, v in parts.items()})
    dets = jax.device_get(jax.jit(lambda p, b: module.apply({'params': p}, b, train=False))(
        params, eval_b))
  first, last = history[0], history[-1]
  assert all(np.isfinite(v) for v in first.values())
  assert last['loss'] < 0.1 * first['loss'] and last['loss_cls'] < 0.05, (first, last)
  # Boxes come back in original pixels (input / scale 0.5); each GT is found by a
  # confident detection of its class (ignored anchors, IoU 0.4-0.5, may add others).
  area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
  for cls, gt in ((2, [60, 40, 178, 118]), (0, [20, 140, 98, 238])):
    sel = dets['valid'][0] & (dets['classes'][0] == cls) & (dets['scores'][0] > 0.5)
    ious = []
    for box in dets['boxes'][0][sel]:
      iw = max(min(box[2], gt[2]) - max(box[0], gt[0]) + 1, 0)
      ih = max(min(box[3], gt[3]) - max(box[1], gt[1]) + 1, 0)
      ious.append(iw * ih / (area(box) + area(gt) - iw * ih))
    assert max(ious, default=0) > 0.5, (cls, dets['boxes'][0][sel], ious)  # CPU ~0.97, GPU 0.75
  assert not (dets['valid'][0] & (dets['classes'][0] == 1) & (dets['scores'][0] > 0.5)).any()
  assert dets['boxes'][0].max() <= 255  # clipped to the (padded) input / scale - 1
