"""detx.ops.ssd: matching, hard-negative mining and ssd_loss against a numpy transcription
of Paddle 1.5's kernels (bipartite_match_op.h, mine_hard_examples_op.cc, target_assign and
fluid.layers.ssd_loss), written below; box_coder with SSD's variances on SSD's priors and
the detection output's multiclass NMS checked against paddlepaddle."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import box_iou, decode_boxes, encode_boxes
from detx.ops.priors import ssd_priors
from detx.ops.ssd import bipartite_match, mine_hard_examples, ssd_detection_output, ssd_loss
from tests.ops.test_nms import _our_rows, _sorted_rows

VAR = (0.1, 0.1, 0.2, 0.2)


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


# -- numpy transcription of Paddle's kernels ---------------------------------------------

def np_bipartite_match(dist, overlap_threshold=0.5, per_prediction=True):
  """Paddle BipartiteMatchKernel (row < 130 branch) + ArgMaxMatch, loop for loop."""
  row, col = dist.shape
  match = -np.ones(col, np.int64)
  mdist = np.zeros(col, np.float64)
  row_pool = list(range(row))
  while row_pool:
    max_idx, max_row, max_dist = -1, -1, -1.0
    for j in range(col):
      if match[j] != -1:
        continue
      for m in row_pool:
        if dist[m, j] < 1e-6:
          continue
        if dist[m, j] > max_dist:
          max_idx, max_row, max_dist = j, m, dist[m, j]
    if max_idx == -1:
      break
    match[max_idx], mdist[max_idx] = max_row, max_dist
    row_pool.remove(max_row)
  if per_prediction:
    for j in range(col):
      if match[j] != -1:
        continue
      max_idx, max_dist = -1, -1.0
      for i in range(row):
        d = dist[i, j]
        if d < 1e-6:
          continue
        if d >= overlap_threshold and d > max_dist:
          max_idx, max_dist = i, d
      if max_idx != -1:
        match[j], mdist[j] = max_idx, max_dist
  return match, mdist


def np_mine_max_negative(cls_loss, match, mdist, ratio=3.0, thr=0.5):
  """Paddle MineHardExamplesKernel, mining_type max_negative, one image."""
  loss_idx = [(cls_loss[m], m) for m in range(len(match)) if match[m] == -1 and mdist[m] < thr]
  num_pos = int(np.sum(match != -1))
  neg_sel = min(int(num_pos * ratio), len(loss_idx))
  loss_idx.sort(key=lambda t: -t[0])
  return sorted(m for _, m in loss_idx[:neg_sel])


def np_iou(a, b):
  out = np.zeros((len(a), len(b)))
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
      ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
      inter = iw * ih
      union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
      out[i, j] = inter / union if inter > 0 else 0.0
  return out


def np_encode(prior, gt, var):
  pw, ph = prior[2] - prior[0], prior[3] - prior[1]
  pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
  tw, th = gt[2] - gt[0], gt[3] - gt[1]
  tcx, tcy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
  return np.array([(tcx - pcx) / pw / var[0], (tcy - pcy) / ph / var[1],
                   np.log(abs(tw / pw)) / var[2], np.log(abs(th / ph)) / var[3]])


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_ssd_loss(loc, conf, gts, labels, priors, var):
  """fluid.layers.ssd_loss (per_prediction, max_negative, normalize) then reduce_sum."""
  total, normalizer = 0.0, 0
  for n in range(len(loc)):
    match, mdist = np_bipartite_match(np_iou(gts[n], priors))
    tl = np.where(match >= 0, labels[n][np.maximum(match, 0)], 0)
    ce = -np.take_along_axis(np_log_softmax(conf[n]), tl[:, None], 1)[:, 0]
    neg = np_mine_max_negative(ce, match, mdist)
    for j in range(len(priors)):
      if match[j] >= 0:
        d = loc[n, j] - np_encode(priors[j], gts[n][match[j]], var)
        a = np.abs(d)
        total += ce[j] + np.sum(np.where(a < 1, 0.5 * d * d, a - 0.5))
        normalizer += 1
      elif j in neg:
        total += ce[j]
  return total / normalizer


# -- tests ------------------------------------------------------------------------------

def _boxes(rng, n, lo=0.05, hi=0.5):
  xy = rng.uniform(0, 1 - hi, (n, 2))
  wh = rng.uniform(lo, hi, (n, 2))
  return np.concatenate([xy, xy + wh], 1)


def _priors(size=60):
  feats = ((4, 4), (2, 2), (1, 1))
  return ssd_priors(feats, (size, size), (12.0, 24.0, 42.0), (0.0, 36.0, 57.0),
                    ((2.0,), (2.0, 3.0), (2.0, 3.0)))


@pytest.mark.parametrize('seed', range(4))
def test_bipartite_match_equals_numpy_transcription_of_paddle_kernel(seed):
  rng = np.random.default_rng(seed)
  g, p = 5, 40
  dist = rng.uniform(0, 1, (g, p)) * (rng.uniform(size=(g, p)) > 0.3)
  dist[:, :3] = 0.0                             # columns nobody reaches
  valid = np.array([True, True, True, seed % 2 == 0, False])
  got_m, got_d = bipartite_match(jnp.asarray(dist, jnp.float32), jnp.asarray(valid))
  want_m, want_d = np_bipartite_match(dist[valid])
  rows = np.nonzero(valid)[0]
  want_m = np.where(want_m >= 0, rows[np.maximum(want_m, 0)], -1)
  np.testing.assert_array_equal(got_m, want_m)
  np.testing.assert_allclose(got_d, want_d, rtol=1e-6)
  only_m, _ = bipartite_match(jnp.asarray(dist, jnp.float32), jnp.asarray(valid), 'bipartite')
  assert int((np.asarray(only_m) >= 0).sum()) == min(valid.sum(), p - 3)


@pytest.mark.parametrize('seed', range(4))
def test_mine_hard_examples_equals_numpy_transcription_of_paddle_kernel(seed):
  rng = np.random.default_rng(10 + seed)
  p = 50
  match = np.where(rng.uniform(size=p) < 0.08 * (seed + 1), rng.integers(0, 3, p), -1)
  mdist = np.where(match >= 0, rng.uniform(0.5, 1, p), rng.uniform(0, 0.7, p))
  loss = rng.uniform(0, 5, p)
  got = mine_hard_examples(jnp.asarray(loss), jnp.asarray(match, jnp.int32), jnp.asarray(mdist))
  assert sorted(np.nonzero(np.asarray(got))[0].tolist()) == np_mine_max_negative(loss, match, mdist)


def test_ssd_loss_equals_numpy_transcription_of_paddle_ssd_loss():
  rng = np.random.default_rng(7)
  priors, var = _priors()
  p, c, g = priors.shape[0], 5, 4
  loc = rng.normal(0, 1, (2, p, 4)).astype(np.float32)
  conf = rng.normal(0, 2, (2, p, c)).astype(np.float32)
  gts = [_boxes(rng, 3), _boxes(rng, 2)]
  labels = [rng.integers(1, c, 3), rng.integers(1, c, 2)]
  pad_b = np.zeros((2, g, 4), np.float32)
  pad_l = np.zeros((2, g), np.int32)
  mask = np.zeros((2, g), bool)
  for n in range(2):
    pad_b[n, :len(gts[n])], pad_l[n, :len(gts[n])], mask[n, :len(gts[n])] = gts[n], labels[n], True
  fn = jax.jit(lambda *a: ssd_loss(*a, priors, var))
  out = fn(loc, conf, pad_b, pad_l, mask)
  want = np_ssd_loss(loc.astype(np.float64), conf.astype(np.float64), gts, labels,
                     np.asarray(priors, np.float64), VAR)
  np.testing.assert_allclose(out['loss'], want, rtol=1e-5)
  grads = jax.grad(lambda l, c: fn(l, c, pad_b, pad_l, mask)['loss'], (0, 1))(loc, conf)
  assert all(np.isfinite(np.asarray(x)).all() for x in grads)
  # Two groups of one image (Paddle's per-GPU normalisation, averaged over GPUs).
  per_image = [np_ssd_loss(loc[i:i + 1].astype(np.float64), conf[i:i + 1].astype(np.float64),
                           gts[i:i + 1], labels[i:i + 1], np.asarray(priors, np.float64), VAR)
               for i in range(2)]
  grouped = jax.jit(lambda *a: ssd_loss(*a, priors, var, group_images=1))(
      loc, conf, pad_b, pad_l, mask)
  np.testing.assert_allclose(grouped['loss'], np.mean(per_image), rtol=1e-5)
  # No ground truth anywhere: finite (Paddle would divide 0 by 0).
  empty = fn(loc, conf, pad_b, pad_l, np.zeros_like(mask))
  assert float(empty['loss']) == 0.0 and float(empty['num_pos']) == 0.0


def test_box_coder_ssd_variances_on_ssd_priors_parity(paddle):
  rng = np.random.default_rng(3)
  priors, var = (np.asarray(x) for x in _priors())
  gt = _boxes(rng, 4).astype(np.float32)
  want = paddle.vision.ops.box_coder(paddle.to_tensor(priors), paddle.to_tensor(var),
                                     paddle.to_tensor(gt), 'encode_center_size',
                                     box_normalized=True).numpy()
  got = encode_boxes(jnp.asarray(priors)[None], jnp.asarray(gt)[:, None], jnp.asarray(var)[None],
                     legacy=False, box_coder_centre=True)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  deltas = rng.normal(0, 1, (2, len(priors), 4)).astype(np.float32)
  want = paddle.vision.ops.box_coder(paddle.to_tensor(priors), paddle.to_tensor(var),
                                     paddle.to_tensor(deltas), 'decode_center_size',
                                     box_normalized=True, axis=0).numpy()
  got = decode_boxes(jnp.asarray(priors)[None], jnp.asarray(deltas), jnp.asarray(var)[None],
                     legacy=False, clip=None)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_detection_output_nms_parity(paddle):
  """SSD's detection_output: decode, softmax, multiclass_nms (background 0, nms_top_k 400,
  keep_top_k 200, IoU 0.45, score 0.01, normalised) against paddle's multiclass_nms3."""
  from paddle import _C_ops
  rng = np.random.default_rng(5)
  priors, var = _priors()
  n, c = 2, 4
  loc = rng.normal(0, 0.5, (n, priors.shape[0], 4)).astype(np.float32)
  conf = rng.normal(0, 2, (n, priors.shape[0], c)).astype(np.float32)
  out = ssd_detection_output(jnp.asarray(loc), jnp.asarray(conf), priors, var, keep_top_k=200)
  boxes = np.asarray(decode_boxes(priors[None], jnp.asarray(loc), var[None], legacy=False,
                                  clip=None))
  scores = np.asarray(jax.nn.softmax(jnp.asarray(conf), -1))
  rows, _, counts = _C_ops.multiclass_nms3(
      paddle.to_tensor(boxes), paddle.to_tensor(scores.transpose(0, 2, 1)), None, 0.01, 400,
      200, 0.45, True, 1.0, 0)
  rows, counts = rows.numpy(), counts.numpy()
  assert counts.min() > 10
  start = 0
  for i in range(n):
    want = _sorted_rows(rows[start:start + counts[i]])
    start += counts[i]
    np.testing.assert_allclose(_our_rows(out, i), want, rtol=1e-5, atol=1e-6)
