"""RPN head, losses and proposals (detx.models.heads.rpn)."""
import jax
import jax.numpy as jnp
import numpy as np

from detx import ops
from detx.models.heads import rpn


def test_head_names_shapes_and_shared_levels():
  head = rpn.RPNHead(num_anchors=3, channels=8, suffix='_fpn2')
  feats = [jnp.zeros((2, 8, 10, 8)), jnp.zeros((2, 4, 5, 8))]
  v = head.init(jax.random.key(0), feats)
  assert set(v['params']) == {'conv_rpn_fpn2', 'rpn_cls_logits_fpn2', 'rpn_bbox_pred_fpn2'}
  outs = head.apply(v, feats)
  assert [(l.shape, d.shape) for l, d in outs] == [((2, 8, 10, 3), (2, 8, 10, 12)),
                                                  ((2, 4, 5, 3), (2, 4, 5, 12))]
  k = v['params']['rpn_cls_logits_fpn2']['kernel']
  assert k.shape == (1, 1, 8, 3) and 0.003 < float(jnp.std(v['params']['conv_rpn_fpn2']['kernel'])) < 0.03
  c4 = rpn.RPNHead(num_anchors=15, channels=16)
  assert set(c4.init(jax.random.key(0), [jnp.zeros((1, 4, 4, 16))])['params']) == {
      'conv_rpn', 'rpn_cls_logits', 'rpn_bbox_pred'}


def _setup():
  shapes = [(8, 8), (4, 4)]
  anchors = rpn.level_anchors(shapes, [(16.0,), (32.0,)], (0.5, 1.0, 2.0), [8.0, 16.0])
  gt = jnp.array([[[8.0, 8.0, 30.0, 40.0], [0, 0, 0, 0]]] * 2)
  gv = jnp.array([[True, False]] * 2)
  crowd = jnp.zeros((2, 2), bool)
  info = jnp.array([[64.0, 64.0, 1.0]] * 2)
  return shapes, anchors, gt, gv, crowd, info


def test_losses_normalisation():
  shapes, anchors, gt, gv, crowd, info = _setup()
  key = jax.random.key(3)
  all_anchors = jnp.concatenate(anchors)
  keys = jax.random.split(key, 2)
  t = jax.vmap(lambda g, v, c, i, k: ops.rpn_target_assign(all_anchors, g, v, c, i, k))(
      gt, gv, crowd, info, keys)
  labels = np.asarray(t['labels'])
  n_sampled, n_fg = (labels >= 0).sum(), (labels == 1).sum()
  assert n_fg > 0
  # Logits that are right by a margin and deltas off by exactly 1 on every fg coordinate.
  logit = jnp.where(t['labels'] == 1, 50.0, -50.0)
  delta = t['box_targets'] + 1.0
  outs, start = [], 0
  for h, w in shapes:
    m = h * w * 3
    outs.append((logit[:, start:start + m].reshape(2, h, w, 3),
                 delta[:, start:start + m].reshape(2, h, w, 12)))
    start += m
  losses = rpn.rpn_losses(outs, anchors, gt, gv, crowd, info, key)
  assert float(losses['loss_rpn_cls']) < 1e-6
  want = n_fg * 4 * (1.0 - 0.5 / 9.0) / n_sampled
  np.testing.assert_allclose(float(losses['loss_rpn_bbox']), want, rtol=1e-5)
  zero = [(jnp.zeros_like(l), jnp.zeros_like(d)) for l, d in outs]
  np.testing.assert_allclose(float(rpn.rpn_losses(zero, anchors, gt, gv, crowd, info,
                                                  key)['loss_rpn_cls']), np.log(2), rtol=1e-6)


def test_fpn_proposals_are_per_level_then_batch_collect():
  shapes, anchors, _, _, _, info = _setup()
  rng = np.random.default_rng(0)
  outs = [(jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float32),
           jnp.asarray(rng.normal(size=(2, h, w, 12)) * 0.1, jnp.float32)) for h, w in shapes]
  rois, scores, valid = rpn.rpn_proposals(outs, anchors, info, 50, 40, 0.7, 0.0, 30)
  assert rois.shape == (2, 30, 4) and int(valid.sum()) == 30  # top 30 over both images
  per = [ops.generate_proposals(jax.nn.sigmoid(l), d, info, a, pre_nms_top_n=50,
                                post_nms_top_n=40) for (l, d), a in zip(outs, anchors)]
  want = ops.collect_fpn_proposals([p[0] for p in per], [p[1] for p in per],
                                   [p[2] for p in per], 30)
  np.testing.assert_allclose(rois, want[0], rtol=1e-6)
  np.testing.assert_array_equal(valid, want[2])
  # C4: one level, per image.
  r1, s1, v1 = rpn.rpn_proposals(outs[:1], anchors[:1], info, 100, 20)
  assert r1.shape == (2, 20, 4) and bool(v1.any(axis=1).all())
