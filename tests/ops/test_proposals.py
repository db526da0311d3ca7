import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import (anchor_generator, collect_fpn_proposals, generate_fpn_proposals,
                      generate_proposals)


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def _rpn_outputs(rng, n, a, h, w, delta_scale=0.5):
  """Random RPN outputs in Paddle's NCHW layout: scores [N, A, H, W], deltas [N, 4A, H, W]."""
  scores = rng.uniform(size=(n, a, h, w)).astype(np.float32)
  deltas = (rng.normal(size=(n, 4 * a, h, w)) * delta_scale).astype(np.float32)
  return scores, deltas


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _paddle_proposals(paddle, scores, deltas, im_info, anchors, pre, post, thresh, min_size,
                      eta=1.0):
  from paddle import _legacy_C_ops
  _, a, h, w = scores.shape
  anc = paddle.to_tensor(np.asarray(anchors).reshape(h, w, a, 4))
  var = paddle.to_tensor(np.ones((h, w, a, 4), np.float32))
  rois, probs, nums = _legacy_C_ops.generate_proposals(
      paddle.to_tensor(scores), paddle.to_tensor(deltas), paddle.to_tensor(im_info), anc, var,
      'pre_nms_topN', pre, 'post_nms_topN', post, 'nms_thresh', thresh, 'min_size', min_size,
      'eta', eta)
  out, start = [], 0
  for k in nums.numpy():
    out.append((rois.numpy()[start:start + k], probs.numpy()[start:start + k, 0]))
    start += k
  return out


CASES = [  # pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, eta
    (100, 30, 0.7, 0.0, 1.0),
    (1000, 50, 0.5, 30.0, 1.0),  # min_size filter at scale 1.5 / 2 (compared at original scale)
    (-1, 500, 0.7, 0.0, 1.0),  # all candidates, fewer survivors than slots
    (-1, 500, 0.9, 0.0, 0.9),  # adaptive NMS: the threshold shrinks to 0.5 as boxes are kept
    (300, 100, 0.7, 0.0, 0.95),
]


@pytest.mark.parametrize('case', CASES)
def test_parity(paddle, case):
  pre, post, thresh, min_size, eta = case
  rng = np.random.default_rng(0)
  n, a, h, w = 2, 3, 10, 14
  anchors = anchor_generator((h, w), [64.0], [0.5, 1.0, 2.0], 16.0)
  scores, deltas = _rpn_outputs(rng, n, a, h, w)
  im_info = np.array([[150, 200, 1.5], [160, 224, 2.0]], np.float32)
  want = _paddle_proposals(paddle, scores, deltas, im_info, anchors, pre, post, thresh, min_size,
                           eta)
  fn = jax.jit(generate_proposals, static_argnums=(5, 6, 7, 8, 9))
  rois, sc, valid = fn(_nhwc(scores), _nhwc(deltas), jnp.asarray(im_info), anchors,
                       (1.0, 1.0, 1.0, 1.0), pre, post, thresh, min_size, eta)
  assert rois.shape == (n, post, 4) and sc.shape == valid.shape == (n, post)
  for i in range(n):
    v = np.asarray(valid[i])
    assert np.all(v[:v.sum()])  # valid slots first
    np.testing.assert_allclose(np.asarray(rois[i])[v], want[i][0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(sc[i])[v], want[i][1], atol=1e-6)
    assert np.all(np.asarray(rois[i])[~v] == 0) and np.all(np.asarray(sc[i])[~v] == 0)


def test_nothing_survives_gives_one_zero_box(paddle):
  rng = np.random.default_rng(1)
  anchors = anchor_generator((4, 5), [32.0], [1.0], 16.0)
  scores, deltas = _rpn_outputs(rng, 1, 1, 4, 5)
  im_info = np.array([[64, 80, 1.0]], np.float32)
  want = _paddle_proposals(paddle, scores, deltas, im_info, anchors, 10, 5, 0.7, 1000.0)
  rois, sc, valid = generate_proposals(_nhwc(scores), _nhwc(deltas), jnp.asarray(im_info),
                                       anchors, (1.0,) * 4, 10, 5, 0.7, 1000.0)
  assert want[0][0].shape == (1, 4) and np.all(want[0][0] == 0) and want[0][1][0] == 0
  assert list(np.asarray(valid[0])) == [True, False, False, False, False]
  assert np.all(np.asarray(rois) == 0) and np.all(np.asarray(sc) == 0)


def test_rpn_keeps_generate_proposals_clamp(paddle):
  """Unlike box_coder (the R-CNN heads' final decode: no clamp), Paddle's
  generate_proposals clamps dw, dh at log(1000 / 16) (bbox_util.h BoxCoder,
  kBBoxClipDefault); detx's proposals keep that clamp."""
  rng = np.random.default_rng(3)
  anchors = anchor_generator((4, 4), [4.0], [1.0], 16.0)
  scores, deltas = _rpn_outputs(rng, 1, 1, 4, 4)
  deltas[:, :2] = 100.0  # centres 400 px in: the boxes stay inside the image
  deltas[:, 2:] = 6.0  # exp(6) = 403 > 62.5: 4 px anchors -> 250 px, not 1614 px
  im_info = np.array([[2000, 2000, 1.0]], np.float32)
  want = _paddle_proposals(paddle, scores, deltas, im_info, anchors, -1, 16, 1.0, 0.0)
  rois, _, valid = generate_proposals(_nhwc(scores), _nhwc(deltas), jnp.asarray(im_info), anchors,
                                      (1.0,) * 4, -1, 16, 1.0, 0.0)
  r = np.asarray(rois[0])[np.asarray(valid[0])]
  np.testing.assert_allclose(r, want[0][0], atol=1e-3)
  np.testing.assert_allclose(r[:, 2] - r[:, 0] + 1, 4 * 62.5, rtol=1e-5)


def test_without_nms_keeps_best_filtered():
  rng = np.random.default_rng(2)
  anchors = anchor_generator((6, 6), [32.0], [0.5, 1.0, 2.0], 8.0)
  scores, deltas = _rpn_outputs(rng, 1, 3, 6, 6)
  im_info = jnp.array([[48.0, 48.0, 1.0]])
  rois, sc, valid = generate_proposals(_nhwc(scores), _nhwc(deltas), im_info, anchors,
                                       (1.0,) * 4, 50, 20, 0.0, 0.0)
  assert bool(valid.all())
  want = np.sort(scores.ravel())[::-1][:20]
  np.testing.assert_allclose(sc[0], want)  # clipping keeps every box at least 1 x 1
  r = np.asarray(rois[0])
  assert r[:, :2].min() >= 0 and r[:, 2].max() <= 47 and r[:, 3].max() <= 47


def _levels(rng, n, sizes):
  """RPN outputs and anchors of FPN levels 2.. for feature sizes `sizes`."""
  outs = []
  for k, (h, w) in enumerate(sizes):
    lvl = k + 2
    anchors = anchor_generator((h, w), [32.0 * 2 ** k], [0.5, 1.0, 2.0], 2.0 ** lvl)
    scores, deltas = _rpn_outputs(rng, n, 3, h, w)
    outs.append((scores, deltas, anchors))
  return outs


def test_fpn_proposals_match_per_level():
  rng = np.random.default_rng(3)
  levels = _levels(rng, 2, [(32, 40), (16, 20), (8, 10), (4, 5)])
  im_info = jnp.array([[128.0, 160.0, 1.0], [120.0, 150.0, 1.25]])
  got = generate_fpn_proposals([_nhwc(s) for s, _, _ in levels],
                               [_nhwc(d) for _, d, _ in levels], im_info,
                               [a for _, _, a in levels], pre_nms_top_n=200, post_nms_top_n=100)
  for k, (s, d, a) in enumerate(levels):
    want = generate_proposals(_nhwc(s), _nhwc(d), im_info, a, (1.0,) * 4, 200, 100, 0.7, 0.0)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(w))


def _paddle_collect(paddle, rois, scores, valid, post):
  from paddle import _legacy_C_ops
  n = rois[0].shape[0]
  r_in, s_in, num_in = [], [], []
  for r, s, v in zip(rois, scores, valid):
    r_in.append(paddle.to_tensor(np.concatenate([r[i][v[i]] for i in range(n)])))
    s_in.append(paddle.to_tensor(np.concatenate([s[i][v[i]] for i in range(n)])[:, None]))
    num_in.append(paddle.to_tensor(v.sum(1).astype(np.int32)))
  out, nums = _legacy_C_ops.collect_fpn_proposals(r_in, s_in, num_in, 'post_nms_topN', post)
  res, start = [], 0
  for k in nums.numpy():
    res.append(out.numpy()[start:start + k])
    start += k
  return res


@pytest.mark.parametrize('post', [40, 1000])
def test_collect_parity(paddle, post):
  rng = np.random.default_rng(4)
  n, sizes = 3, [30, 20, 10, 5]
  rois = [rng.uniform(0, 100, (n, k, 4)).astype(np.float32) for k in sizes]
  scores = [rng.uniform(0, 1, (n, k)).astype(np.float32) for k in sizes]
  valid = [rng.uniform(size=(n, k)) < 0.8 for k in sizes]
  want = _paddle_collect(paddle, rois, scores, valid, post)
  out_rois, out_scores, ok = jax.jit(collect_fpn_proposals, static_argnums=3)(
      [jnp.asarray(r) for r in rois], [jnp.asarray(s) for s in scores],
      [jnp.asarray(v) for v in valid], post)
  assert out_rois.shape == (n, post, 4) and ok.shape == (n, post)
  total = sum(int(v.sum()) for v in valid)
  assert int(ok.sum()) == min(post, total)
  for i in range(n):
    v = np.asarray(ok[i])
    assert np.all(v[:v.sum()])
    np.testing.assert_array_equal(np.asarray(out_rois[i])[v], want[i])
    s = np.asarray(out_scores[i])[v]
    assert np.all(np.diff(s) <= 0)


def test_collect_is_batch_wide():
  # Image 0 has all the best scores: it takes every slot.
  rois = [jnp.zeros((2, 4, 4))]
  scores = [jnp.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2]])]
  valid = [jnp.ones((2, 4), bool)]
  _, sc, ok = collect_fpn_proposals(rois, scores, valid, 3)
  np.testing.assert_array_equal(ok, [[True, True, True], [False, False, False]])
  np.testing.assert_allclose(sc[0], [0.9, 0.8, 0.7])
