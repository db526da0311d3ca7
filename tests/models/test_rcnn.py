"""Faster / Mask / Cascade R-CNN: names, optimizer rules, losses, detection output and
a tiny end-to-end step (detx.models.rcnn, detx.models.heads.roi_heads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx import config as cfg
from detx import ops
from detx.models import cascade_rcnn, rcnn
from detx.models.base import build_model
from detx.models.backbones import resnet
from detx.models.heads import roi_heads
from detx.weights import paddle as pw
from tests.helpers import compiled

SHALLOW = {50: (1, 1, 1, 1), 101: (1, 1, 2, 1)}


def _init(module, image):
  """The model's variables (key 0), as one compiled program."""
  return compiled(lambda x: module.init(jax.random.key(0), x, method=type(module).init_params),
                  image)


def _config(name, **overrides):
  c = cfg.load(name)
  c.data.max_size = 128
  c.model.rpn.update(train_pre_nms_top_n=256, train_post_nms_top_n=128, train_collect_top_n=128,
                     test_pre_nms_top_n=128, test_post_nms_top_n=64, test_collect_top_n=64)
  c.model.roi.batch_size_per_im = 32
  c.model.nms.update(max_candidates=512, keep_top_k=20)
  return cfg.override(c, overrides)


def _abstract_params(module):
  init = lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                             method=type(module).init_params)
  return jax.eval_shape(init)['params']


def _paddle_shapes(module):
  params = _abstract_params(module)
  mapping, unmapped = pw.paddle_names({'params': params}, rcnn.paddle_rules(module))
  assert unmapped == []
  from flax import traverse_util
  leaves = traverse_util.flatten_dict({'params': params})
  return {name: tuple(layout.to_paddle(np.zeros(leaves[key].shape, np.float32)).shape)
          for key, (name, layout) in mapping.items()}


@pytest.mark.parametrize('name,expected', [
    ('faster_rcnn_r50_fpn_1x', {
        'conv_rpn_fpn2_w': (256, 256, 3, 3), 'rpn_cls_logits_fpn2_w': (3, 256, 1, 1),
        'rpn_bbox_pred_fpn2_b': (12,), 'fpn_inner_res5_sum_w': (256, 2048, 1, 1),
        'fc6_w': (12544, 1024), 'fc7_b': (1024,), 'cls_score_w': (1024, 81),
        'bbox_pred_w': (1024, 324), 'res5c_branch2c_weights': (2048, 512, 1, 1),
        'bn_conv1_scale': (64,)}),
    ('faster_rcnn_r101_1x', {
        'conv_rpn_w': (1024, 1024, 3, 3), 'rpn_cls_logits_w': (15, 1024, 1, 1),
        'rpn_bbox_pred_w': (60, 1024, 1, 1), 'res4b22_branch2c_weights': (1024, 256, 1, 1),
        'res5a_branch1_weights': (2048, 1024, 1, 1), 'bn5a_branch2a_offset': (512,),
        'cls_score_w': (2048, 81), 'bbox_pred_b': (324,)}),
    ('mask_rcnn_r50_1x', {
        'conv5_mask_w': (2048, 256, 2, 2), 'mask_fcn_logits_w': (81, 256, 1, 1)}),
    ('mask_rcnn_r50_vd_fpn_2x', {
        'conv1_1_weights': (32, 3, 3, 3), 'mask_inter_feat_4_w': (256, 256, 3, 3),
        'conv5_mask_w': (256, 256, 2, 2), 'mask_fcn_logits_b': (81,)}),
    ('cascade_rcnn_r50_fpn_1x', {
        'fc6_w': (12544, 1024), 'fc6_2_w': (12544, 1024), 'fc7_3_b': (1024,),
        'cls_score_2_w': (1024, 81), 'bbox_pred_w': (1024, 8), 'bbox_pred_3_w': (1024, 8)}),
])
def test_paddle_names_and_shapes(name, expected):
  module, _ = build_model(cfg.load(name))
  shapes = _paddle_shapes(module)
  for n, shape in expected.items():
    assert shapes.get(n) == shape, (n, shapes.get(n))
  if 'cascade' not in name:
    assert 'fc6_2_w' not in shapes
  if 'fpn' in name:
    assert 'conv_rpn_w' not in shapes and 'res5a_branch2a_weights' in shapes


def test_fc6_weights_round_trip_through_paddle_layout():
  module, _ = build_model(cfg.load('faster_rcnn_r50_fpn_1x'))
  abstract = _abstract_params(module)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), abstract)
  rules = rcnn.paddle_rules(module)
  arrays = pw.export_paddle_weights({'params': params}, rules)
  # Paddle flattens the 256 x 7 x 7 RoI feature C-major: row c * 49 + h * 7 + w.
  fc6 = params['bbox_head']['fc6']['kernel']
  np.testing.assert_array_equal(arrays['fc6_w'][5 * 49 + 2 * 7 + 3], fc6[(2 * 7 + 3) * 256 + 5])
  loaded, report = pw.load_paddle_weights({'params': abstract}, arrays, rules)
  assert report.ok and not report.unexpected
  np.testing.assert_array_equal(loaded['params']['bbox_head']['fc6']['kernel'], fc6)


def test_param_rules():
  module, rules = build_model(cfg.load('cascade_rcnn_r50_fpn_1x'))
  params = _abstract_params(module)
  lr = rules.lr_mult(params)
  decay = rules.decay_mask(params)
  bb = lr['backbone']
  assert bb['conv1']['conv']['kernel'] == 0.0 and bb['res2']['res2a']['res2a_branch2a']['conv'][
      'kernel'] == 0.0
  assert bb['res3']['res3a']['res3a_branch2a']['conv']['kernel'] == 1.0
  assert bb['res3']['res3a']['res3a_branch2a']['bn3a_branch2a']['scale'] == 0.0
  assert lr['rpn']['conv_rpn_fpn2']['kernel'] == 1.0 and lr['rpn']['conv_rpn_fpn2']['bias'] == 2.0
  assert lr['neck']['fpn_res2_sum']['bias'] == 2.0
  assert lr['bbox_head']['fc6']['kernel'] == 1.0
  assert decay['bbox_head']['fc6']['kernel'] and not decay['bbox_head']['fc6']['bias']
  assert not decay['backbone']['res3']['res3a']['res3a_branch2a']['bn3a_branch2a']['scale']
  # C4: the res5 head's affine norms are frozen, its convs train.
  module, rules = build_model(cfg.load('faster_rcnn_r50_1x'))
  lr = rules.lr_mult(_abstract_params(module))
  res5a = lr['bbox_head']['res5']['res5a']
  assert res5a['res5a_branch2a']['conv']['kernel'] == 1.0
  assert res5a['res5a_branch2a']['bn5a_branch2a']['bias'] == 0.0
  assert lr['bbox_head']['cls_score']['bias'] == 2.0


# PaddleDetection 597145c, the Cascade R-CNN training program:
#   architectures/cascade_rcnn.py:71   self.cascade_rcnn_loss_weight = [1.0, 0.5, 0.25]
#   architectures/cascade_rcnn.py:133  wb_scalar=1.0 / self.cascade_rcnn_loss_weight[i]
#   roi_heads/cascade_head.py:77,80    cls_score%s_w / _b: learning_rate=wb_scalar
#   roi_heads/cascade_head.py:90,93    bbox_pred%s_w / _b: learning_rate=wb_scalar
#   roi_heads/cascade_head.py:280,283  FC6FC7Head fc6%s_w / _b: learning_rate=wb_scalar
#   roi_heads/cascade_head.py:292,295  FC6FC7Head fc7%s_w / _b: learning_rate=wb_scalar
# so stage i's weights and biases all train at lr x 1 / loss_weight[i]: x1, x2, x4.
PADDLE_CASCADE_LR = {  # detx module -> (Paddle name suffix, lr of every w and b)
    'bbox_head': ('', 1.0), 'bbox_head_2': ('_2', 2.0), 'bbox_head_3': ('_3', 4.0)}


def test_cascade_stage_lr_multipliers_follow_paddle():
  module, rules = build_model(cfg.load('cascade_rcnn_r50_fpn_1x'))
  lr = rules.lr_mult(_abstract_params(module))
  for head, (suffix, mult) in PADDLE_CASCADE_LR.items():
    for layer in ('fc6', 'fc7', 'cls_score', 'bbox_pred'):
      got = lr[head][layer + suffix]
      assert got == {'kernel': mult, 'bias': mult}, (head, layer, got)
  # The rest keeps Detectron's biases at x2 (597145c: anchor_heads/rpn_head.py:350 conv_rpn_fpn,
  # backbones/fpn.py:132 fpn_res*_sum).
  assert lr['rpn']['conv_rpn_fpn2']['bias'] == 2.0 and lr['neck']['fpn_res2_sum']['bias'] == 2.0


def test_inits():
  module, _ = build_model(cfg.load('faster_rcnn_r50_fpn_1x'))
  x = jnp.zeros((1, 7, 7, 256))
  head = roi_heads.TwoFCHead(81, 81)
  p = head.init(jax.random.key(0), x)['params']
  assert abs(float(p['cls_score']['kernel'].std()) - 0.01) < 0.001
  assert abs(float(p['bbox_pred']['kernel'].std()) - 0.001) < 0.0001
  limit = (3.0 / 12544) ** 0.5  # Paddle's Xavier(fan_out=fan_in): U(+-sqrt(6 / 2 fan_in))
  assert float(jnp.abs(p['fc6']['kernel']).max()) <= limit
  assert float(jnp.abs(p['fc6']['kernel']).max()) > 0.95 * limit
  assert not np.asarray(p['fc6']['bias']).any()


def test_fast_rcnn_losses_match_numpy():
  rng = np.random.default_rng(0)
  n, s, c = 2, 6, 4
  cls = rng.normal(size=(n, s, c)).astype(np.float32)
  box = rng.normal(size=(n, s, 4 * c)).astype(np.float32)
  labels = np.array([[1, 3, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0]], np.int32)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
  tgt = rng.normal(size=(n, s, 4)).astype(np.float32)
  t = {'labels': jnp.asarray(labels), 'valid': jnp.asarray(valid),
       'box_targets': jnp.asarray(tgt * (labels > 0)[..., None]),
       'box_class': jnp.asarray(labels)}
  loss_cls, loss_box = roi_heads.fast_rcnn_losses(jnp.asarray(cls), jnp.asarray(box), t, c)
  logp = cls - np.log(np.exp(cls).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss_cls, (ce * valid).sum() / valid.sum(), rtol=1e-5)
  sl1 = lambda d: np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)
  want = 0.0
  for i in range(n):
    for j in range(s):
      k = labels[i, j]
      if k > 0:
        want += sl1(box[i, j, 4 * k:4 * k + 4] - tgt[i, j]).sum()
  np.testing.assert_allclose(loss_box, want / valid.sum(), rtol=1e-5)


def test_detect_decodes_per_class_and_maps_back():
  rois = jnp.array([[[20.0, 20.0, 59.0, 39.0], [100.0, 100.0, 139.0, 139.0],
                     [0.0, 0.0, 9.0, 9.0]]])  # input pixels, scale 2
  probs = jnp.array([[[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]]])
  deltas = np.zeros((1, 3, 12), np.float32)
  deltas[0, 0, 4:8] = [1.0, 0.0, 0.0, 0.0]  # class 1 of RoI 0: dx 1 * 0.1 * w
  deltas[0, 1, 8:12] = [0.0, 0.0, 2.0, 0.0]  # class 2 of RoI 1: w * exp(0.4), clipped
  dets = roi_heads.detect(probs, jnp.asarray(deltas), rois, jnp.array([[True, True, False]]),
                          jnp.array([2.0]), jnp.array([[65, 69]]), (0.1, 0.1, 0.2, 0.2),
                          class_agnostic=False, keep_top_k=5)
  valid = np.asarray(dets['valid'][0])
  assert valid.sum() == 4  # scores 0.8, 0.8, 0.1, 0.1 > 0.05; RoI 2 invalid, background never
  b = np.asarray(dets['boxes'][0])
  cls = np.asarray(dets['classes'][0])
  sc = np.asarray(dets['scores'][0])
  i0 = np.nonzero((cls == 0) & np.isclose(sc, 0.8))[0][0]
  r = np.array([10.0, 10.0, 29.5, 19.5])  # RoI 0 / 2
  w = r[2] - r[0] + 1
  np.testing.assert_allclose(b[i0], r + [0.1 * w, 0, 0.1 * w, 0], rtol=1e-5)
  i1 = np.nonzero((cls == 1) & np.isclose(sc, 0.8))[0][0]
  r = np.array([50.0, 50.0, 69.5, 69.5])
  w = (r[2] - r[0] + 1) * np.exp(0.4)
  cx = r[0] + 0.5 * (r[2] - r[0] + 1)
  want = [cx - w / 2, 50.0, min(cx + w / 2 - 1, 68.0), 64.0]  # clipped to (65, 69)
  np.testing.assert_allclose(b[i1], want, rtol=1e-5)


def test_detect_keeps_every_pair_over_the_threshold_like_paddle():
  """Paddle's MultiClassNMS (nms_top_k -1, modeling/ops.py:101-112 at 597145c) runs NMS
  per class over every box above score_threshold; detx's R-CNN detection output does
  too (model.nms.max_candidates -1). Here 1000 overlapping RoIs x 80 classes put 80k
  pairs over 0.05; each class keeps one box, so Paddle returns 80 detections. A cap of
  4096 pairs across classes would keep only classes 1-40 (their scores are higher)."""
  paddle = pytest.importorskip('paddle')
  from paddle import _C_ops
  rng = np.random.default_rng(0)
  r, c = 1000, 81
  xy = rng.uniform(100, 104, (r, 2))
  rois = np.concatenate([xy, xy + 100], -1).astype(np.float32)  # IoU > 0.9 with each other
  probs = np.zeros((1, r, c), np.float32)
  probs[0, :, 1:41] = rng.uniform(0.2, 0.9, (r, 40))
  probs[0, :, 41:] = rng.uniform(0.06, 0.1, (r, 40))
  deltas = jnp.zeros((1, r, 4 * c))
  run = lambda cap: roi_heads.detect(
      jnp.asarray(probs), deltas, jnp.asarray(rois)[None], jnp.ones((1, r), bool),
      jnp.ones((1,)), jnp.array([[800, 800]]), (0.1, 0.1, 0.2, 0.2), class_agnostic=False,
      max_candidates=cap)
  assert cfg.load('faster_rcnn_r50_fpn_1x').model.nms.max_candidates == -1
  got = run(-1)
  rows, _, counts = _C_ops.multiclass_nms3(
      paddle.to_tensor(rois[None]), paddle.to_tensor(probs.transpose(0, 2, 1)), None, 0.05, -1,
      100, 0.5, False, 1.0, 0)
  rows = rows.numpy()[:int(counts.numpy()[0])]
  assert len(rows) == 80
  v = np.asarray(got['valid'][0])
  ours = np.concatenate([np.asarray(got['classes'][0])[v, None] + 1.0,
                         np.asarray(got['scores'][0])[v, None], np.asarray(got['boxes'][0])[v]], 1)
  key = lambda a: a[np.lexsort((a[:, 1], a[:, 0]))]
  np.testing.assert_allclose(key(ours), key(rows), rtol=1e-5, atol=1e-3)
  capped = run(4096)
  assert int(capped['valid'].sum()) == 40 and int(capped['classes'][0].max()) == 39


def test_cascade_variances():
  assert cascade_rcnn.cascade_variances(10.0) == (0.1, 0.1, 0.2, 0.2)
  np.testing.assert_allclose(cascade_rcnn.cascade_variances(30.0), [1 / 30, 1 / 30, 2 / 30, 2 / 30])


def _paddle_decode(paddle, rois, deltas, var):
  """Paddle's box_coder decode_center_size as the zoo's heads call it: prior boxes
  [R, 4] broadcast along axis 1 of the deltas [R, C, 4], variances a list, not
  normalized (bbox_head.py:236 via its BoxCoder, :34-47; cascade_head.py:201-207;
  architectures/cascade_rcnn.py:156-162, at 597145c)."""
  return paddle.vision.ops.box_coder(paddle.to_tensor(rois), list(var), paddle.to_tensor(deltas),
                                     'decode_center_size', box_normalized=False,
                                     axis=1).numpy()


def test_final_decode_and_cascade_refine_do_not_clamp_like_paddle_box_coder():
  """Paddle's box_coder kernel applies exp(var * dw) unclamped; only generate_proposals
  (the RPN) clamps at log(1000 / 16). dw, dh here reach var * d = 6 > log(62.5) = 4.14."""
  paddle = pytest.importorskip('paddle')
  rng = np.random.default_rng(0)
  r, c = 12, 3
  xy = rng.uniform(0, 200, (r, 2))
  rois = np.concatenate([xy, xy + rng.uniform(4, 60, (r, 2))], -1).astype(np.float32)
  deltas = rng.uniform(-2, 2, (r, c, 4)).astype(np.float32)
  deltas[..., 2:] = rng.uniform(10, 30, (r, c, 2))  # x 0.2 -> up to 6
  var = (0.1, 0.1, 0.2, 0.2)
  got = roi_heads.decode_class_boxes(jnp.asarray(rois), jnp.asarray(deltas.reshape(r, 4 * c)),
                                     var, c, class_agnostic=False)
  want = _paddle_decode(paddle, rois, deltas, var)
  assert (np.asarray(got)[..., 2] - np.asarray(got)[..., 0] + 1).max() > 100 * 64  # past 62.5x
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)

  # Cascade: class-agnostic deltas [R, 8], the foreground slot for every class
  # (cascade_head.py:194-200), the stage-3 variances in the final decode...
  module = cascade_rcnn.CascadeRCNN(cfg.load('cascade_rcnn_r50_fpn_1x').model)
  agnostic = deltas[:, :2].reshape(r, 8) * 3.0  # stage variances are smaller: 2 / 30
  var3 = cascade_rcnn.cascade_variances(30.0)
  got = roi_heads.decode_class_boxes(jnp.asarray(rois), jnp.asarray(agnostic), var3, c,
                                     class_agnostic=True)
  want = _paddle_decode(paddle, rois, np.repeat(agnostic.reshape(r, 2, 4)[:, 1:], c, 1), var3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)
  # ... and each stage's refinement of the RoIs (_decode_box).
  for stage, w in enumerate((10.0, 20.0)):
    got = module.refine(jnp.asarray(rois)[None], jnp.asarray(agnostic)[None], stage)[0]
    want = _paddle_decode(paddle, rois, agnostic.reshape(r, 2, 4)[:, 1:],
                          cascade_rcnn.cascade_variances(w))[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)


def _batch(b=2, g=4):
  boxes = np.zeros((b, g, 4), np.float32)
  boxes[:, 0] = [8, 10, 60, 50]
  boxes[:, 1] = [30, 20, 100, 90]
  boxes[:, 2] = [5, 40, 40, 92]
  scale = np.array([0.2, 0.25], np.float32)
  # Each GT's polygon: the left two thirds of its box, in original pixels.
  x1, y1, x2, y2 = np.moveaxis(boxes / scale[:, None, None], -1, 0)
  xm = x1 + (x2 - x1) * 2 / 3
  polys = np.stack([np.stack(c, -1) for c in
                    ((x1, y1), (xm, y1), (xm, y2), (x1, y2))], 2).astype(np.float32)
  return {
      'image': jnp.asarray(np.random.default_rng(0).normal(size=(b, 96, 128, 3)), jnp.float32),
      'image_hw': jnp.array([[96, 128], [90, 120]], jnp.int32),
      'scale': jnp.array([0.2, 0.25], jnp.float32),
      'boxes': jnp.asarray(boxes),
      'classes': jnp.array([[1, 5, 7, 0]] * b, jnp.int32),
      'is_crowd': jnp.zeros((b, g), bool),
      'box_mask': jnp.array([[1, 1, 1, 0]] * b, bool),
      'gt_polys': jnp.asarray(polys),
      'gt_poly_ids': jnp.asarray(np.where(np.arange(g)[:, None] < 3, 0, -1)
                                 * np.ones((b, g, 4), np.int32)),
      'orig_size': jnp.array([[480, 640], [360, 480]], jnp.int32),
  }


def test_mask_rcnn_fpn_train_and_eval(monkeypatch):
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  module, _ = build_model(_config('mask_rcnn_r50_fpn_1x'))
  batch = _batch()
  variables = jax.jit(lambda k: module.init(k, batch['image'], method=type(module).init_params))(
      jax.random.key(0))
  train_b = {k: batch[k] for k in module.TRAIN_KEYS}

  @jax.jit
  def step(params, key):
    def loss_fn(p):
      out = module.apply({'params': p}, train_b, train=True, rngs={'sample': key})
      return out['loss'], out
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, losses), grads = step(variables['params'], jax.random.key(1))
  assert set(losses) == {'loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
                         'loss_mask'}
  assert all(np.isfinite(float(v)) for v in losses.values())
  np.testing.assert_allclose(float(loss), sum(float(v) for k, v in losses.items() if k != 'loss'),
                             rtol=1e-5)
  (loss_same, _), _ = step(variables['params'], jax.random.key(1))
  (loss_other, _), _ = step(variables['params'], jax.random.key(2))
  assert float(loss_same) == float(loss)
  assert float(loss_other) != float(loss)  # the 'sample' stream drives the samplers
  g = grads
  assert float(jnp.abs(g['mask_head']['mask_fcn_logits']['kernel']).sum()) > 0
  assert float(jnp.abs(g['rpn']['conv_rpn_fpn2']['kernel']).sum()) > 0
  assert float(jnp.abs(g['backbone']['res3']['res3a']['res3a_branch2a']['conv']['kernel']).sum()) > 0
  assert float(jnp.abs(g['backbone']['res2']['res2a']['res2a_branch2a']['conv']['kernel']).sum()) == 0

  eval_b = {k: batch[k] for k in module.EVAL_KEYS}
  dets = jax.jit(lambda v, b: module.apply(v, b, train=False))(variables, eval_b)
  k = 20
  assert dets['boxes'].shape == (2, k, 4) and dets['masks'].shape == (2, k, 28, 28)
  v = np.asarray(dets['valid'])
  b = np.asarray(dets['boxes'])
  hw = np.asarray(batch['orig_size'])
  assert (b[..., 0] >= 0).all() and (b[..., 2] <= (hw[:, 1:2] - 1)).all()
  assert (b[..., 3] <= (hw[:, 0:1] - 1)).all()
  cls = np.asarray(dets['classes'])[v]
  assert ((cls >= 0) & (cls < 80)).all()
  m = np.asarray(dets['masks'])
  assert ((m >= 0) & (m <= 1)).all() and not m[~v].any()
  # The train loop's init batch has no image_hw / scale: defaults apply.
  plain = {k: batch[k] for k in ('image', 'orig_size')}
  out = jax.eval_shape(lambda v, b: module.apply(v, b, train=False), variables, plain)
  assert out['boxes'].shape == (2, k, 4)


def test_cascade_eval_clips_to_paddle_box_clip_of_padded_im_info(monkeypatch):
  """Cascade's detections are clipped as cascade_head.py:210 (597145c) did:
  box_clip(im_info) with the padded eval im_info, i.e. to round(padded / scale) - 1;
  Faster / Mask R-CNN clip to the original image (bbox_head.py:237, im_shape)."""
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  c = _config('cascade_rcnn_r50_fpn_1x')
  c.model.nms.update(score_threshold=0.0, max_candidates=-1)  # the zoo's uncapped NMS
  module, _ = build_model(c)
  batch = _batch()
  variables = _init(module, batch['image'][:1])
  # Stage 3 widens the boxes (foreground dw, dh = 150 at variance 2 / 30) past the image:
  # they reach the clip bounds.
  bias = np.zeros(8, np.float32)
  bias[6:] = 150.0
  variables['params']['bbox_head_3']['bbox_pred_3']['bias'] = jnp.asarray(bias)
  eval_b = {k: batch[k] for k in module.EVAL_KEYS}
  dets = jax.jit(lambda v, b: module.apply(v, b, train=False))(variables, eval_b)
  # image 0: 96 x 128 at 0.2 (padded to 32: the same) -> 480 x 640, the original size;
  # image 1: 90 x 120 at 0.25, padded 96 x 128 -> 384 x 512, past the original 360 x 480.
  want_hw = np.asarray(ops.box_clip_size(ops.im_info(
      ops.padded_hw(batch['image_hw'], 32, (96, 128)), batch['scale'])))
  np.testing.assert_array_equal(want_hw, [[480, 640], [384, 512]])
  b, v = np.asarray(dets['boxes']), np.asarray(dets['valid'])
  for i in range(2):
    assert v[i].any()
    bi = b[i][v[i]]
    assert bi.min() == 0
    assert bi[:, 2].max() == want_hw[i, 1] - 1 and bi[:, 3].max() == want_hw[i, 0] - 1


def test_c4_eval_runs_box_head_one_image_at_a_time(monkeypatch):
  """C4 evaluation scans res5 over the images; a batch gives each image's own result."""
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  module, _ = build_model(_config('faster_rcnn_r50_1x'))
  batch = _batch()
  variables = _init(module, batch['image'][:1])
  # Non-trivial heads: a zero-initialised bbox_pred would hide a mix-up of images.
  p = variables['params']['bbox_head']
  p['bbox_pred']['kernel'] = 0.05 * jax.random.normal(jax.random.key(3), p['bbox_pred']['kernel'].shape)
  eval_b = {k: batch[k] for k in module.EVAL_KEYS}
  run = jax.jit(lambda v, b: module.apply(v, b, train=False))
  jaxpr = str(jax.make_jaxpr(lambda v, b: module.apply(v, b, train=False))(variables, eval_b))
  assert 'scan' in jaxpr
  both = run(variables, eval_b)
  for i in range(2):
    one = run(variables, {k: x[i:i + 1] for k, x in eval_b.items()})
    for key in ('boxes', 'scores', 'classes', 'valid'):
      np.testing.assert_allclose(np.asarray(both[key][i]), np.asarray(one[key][0]),
                                 rtol=1e-4, atol=1e-3, err_msg=key)


@pytest.mark.parametrize('freeze_norm', [False, True])
def test_c4_head_res5_batch_norm_follows_train(monkeypatch, freeze_norm):
  """With a trainable BatchNorm, the C4 head's res5 trains on RoI batch statistics and
  updates its running ones (as the backbone's do); frozen norms stay as loaded."""
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  c = _config('faster_rcnn_r50_1x')
  c.model.backbone.update(norm='bn', freeze_norm=freeze_norm)
  module, _ = build_model(c)
  batch = _batch()
  variables = _init(module, batch['image'][:1])
  train_b = {k: batch[k] for k in module.TRAIN_KEYS}
  losses, updated = compiled(lambda v, b: module.apply(v, b, train=True, mutable=['batch_stats'],
                                                       rngs={'sample': jax.random.key(1)}),
                             variables, train_b)
  assert np.isfinite(float(losses['loss']))
  before = variables['batch_stats']['bbox_head']['res5']['res5a']['res5a_branch2a']['bn5a_branch2a']
  after = updated['batch_stats']['bbox_head']['res5']['res5a']['res5a_branch2a']['bn5a_branch2a']
  changed = not np.allclose(before['mean'], after['mean'])
  assert changed == (not freeze_norm)


@pytest.mark.slow
# 80 s (FPN) on CI, ~100 s (C4, not run in CI before either). In CI, tests/test_overfit_rcnn.py's
# phase 1 and Mask R-CNN fit (asserting the FPN's bbox floor) train the FPN from scratch.
@pytest.mark.long
@pytest.mark.parametrize('name', ['faster_rcnn_r50_fpn_1x', 'faster_rcnn_r50_1x'])
def test_faster_rcnn_overfits_two_boxes(monkeypatch, name):
  """A shallow Faster R-CNN (FPN, and C4 with its res5 RoI head) from scratch learns two
  boxes of one image."""
  import optax
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  c = _config(name, **{'model.num_classes': 2})
  c.model.backbone.update(freeze_at=0, freeze_norm=False)
  c.model.rpn.collect_images = 1
  module, _ = build_model(c)
  img = np.zeros((1, 128, 128, 3), np.float32)
  img[0, 20:60, 16:80] = [2.0, -1.0, 0.0]
  img[0, 70:120, 60:110] = [-1.0, 0.0, 2.0]
  batch = {
      'image': jnp.asarray(img), 'image_hw': jnp.array([[128, 128]], jnp.int32),
      'scale': jnp.array([1.0]), 'boxes': jnp.array([[[16.0, 20, 79, 59], [60, 70, 109, 119]]]),
      'classes': jnp.array([[0, 1]], jnp.int32), 'is_crowd': jnp.zeros((1, 2), bool),
      'box_mask': jnp.ones((1, 2), bool), 'orig_size': jnp.array([[128, 128]], jnp.int32)}
  params = module.init(jax.random.key(0), batch['image'], method=type(module).init_params)['params']
  tx = optax.chain(optax.clip_by_global_norm(10.0), optax.sgd(0.02, momentum=0.9))
  opt = tx.init(params)
  train_b = {k: batch[k] for k in module.TRAIN_KEYS}

  @jax.jit
  def step(params, opt, key):
    def loss_fn(p):
      return module.apply({'params': p}, train_b, train=True, rngs={'sample': key})['loss']
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  for i in range(150):
    params, opt, loss = step(params, opt, jax.random.key(i))
  dets = module.apply({'params': params}, {k: batch[k] for k in module.EVAL_KEYS}, train=False)
  top = [int(np.argmax(np.where((dets['classes'][0] == c) & dets['valid'][0],
                                dets['scores'][0], -1))) for c in (0, 1)]
  for c, k in enumerate(top):
    iou = ops.box_iou(dets['boxes'][0, k][None], batch['boxes'][0, c][None], legacy=True)
    assert float(iou[0, 0]) > 0.5, (c, dets['boxes'][0, k], float(loss))

