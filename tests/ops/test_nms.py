import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import multiclass_nms, nms

nms_module = importlib.import_module('detx.ops.nms')  # detx.ops.nms is also the function


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


@pytest.fixture(params=[1, 7, 128], ids=lambda b: f'block{b}')
def block(request, monkeypatch):
  """greedy_keep one candidate per step (the CPU default), and in blocks (accelerators)."""
  monkeypatch.setattr(nms_module, 'default_block', lambda: request.param)
  return request.param


def _random_boxes(rng, shape, scale):
  xy = rng.uniform(0, scale, shape + (2,))
  wh = rng.uniform(0.05 * scale, 0.4 * scale, shape + (2,))
  return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def _iou(p, q, legacy):
  off = 1.0 if legacy else 0.0
  iw = max(min(p[2], q[2]) - max(p[0], q[0]) + off, 0.0)
  ih = max(min(p[3], q[3]) - max(p[1], q[1]) + off, 0.0)
  inter = iw * ih
  area = lambda b: (b[2] - b[0] + off) * (b[3] - b[1] + off)
  return inter / (area(p) + area(q) - inter)


def _greedy_reference(boxes, scores, thr, score_thr=-np.inf, legacy=False, top_k=-1):
  """Textbook greedy NMS: visit by score (stable), drop boxes overlapping a kept one."""
  order = [i for i in np.argsort(-scores, kind='stable') if scores[i] > score_thr]
  if top_k > -1:
    order = order[:top_k]
  kept = []
  for i in order:
    if all(_iou(boxes[i], boxes[j], legacy) <= thr for j in kept):
      kept.append(i)
  return kept


def _multiclass_reference(boxes, scores, score_thr, nms_top_k, keep_top_k, thr, normalized, bg):
  """Paddle's multiclass_nms for one image, as (class, score, box) rows."""
  rows = []
  for c in range(scores.shape[1]):
    if c == bg:
      continue
    for i in _greedy_reference(boxes, scores[:, c], thr, score_thr, not normalized, nms_top_k):
      rows.append((c, scores[i, c], *boxes[i]))
  rows.sort(key=lambda r: -r[1])
  if keep_top_k > -1:
    rows = rows[:keep_top_k]
  return _sorted_rows(np.array(rows, np.float32).reshape(-1, 6))


def _sorted_rows(rows):
  return rows[np.lexsort((-rows[:, 1], rows[:, 0]))]


def _our_rows(out, i):
  v = np.asarray(out['valid'][i])
  rows = np.concatenate([np.asarray(out['classes'][i])[v, None].astype(np.float32),
                         np.asarray(out['scores'][i])[v, None], np.asarray(out['boxes'][i])[v]], 1)
  return _sorted_rows(rows)


@pytest.mark.parametrize('legacy', [False, True])
def test_nms_matches_greedy_reference(legacy, block):
  rng = np.random.default_rng(0)
  scale = 100.0 if legacy else 1.0
  fn = jax.jit(nms, static_argnums=(2, 3, 4, 5))
  for _ in range(3):
    boxes = _random_boxes(rng, (80,), scale)
    scores = rng.uniform(0, 1, 80).astype(np.float32)
    want = _greedy_reference(boxes, scores, 0.4, 0.2, legacy)
    idx, valid = fn(jnp.asarray(boxes), jnp.asarray(scores), 0.4, 100, 0.2, legacy)
    assert idx.shape == (100,) and valid.shape == (100,) and idx.dtype == jnp.int32
    assert list(np.asarray(idx)[np.asarray(valid)]) == want
    assert np.all(np.asarray(idx)[~np.asarray(valid)] == 0)
    # Truncation keeps the best ones.
    idx, valid = fn(jnp.asarray(boxes), jnp.asarray(scores), 0.4, 5, 0.2, legacy)
    assert list(np.asarray(idx)[np.asarray(valid)]) == want[:5]


def test_nms_known_case():
  boxes = jnp.array([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.], [0., 0., 10., 9.]])
  scores = jnp.array([0.9, 0.8, 0.7, 0.95])
  idx, valid = nms(boxes, scores, 0.5, 4)
  assert list(np.asarray(idx)) == [3, 2, 0, 0] and list(np.asarray(valid)) == [True, True, False, False]


def test_nms_parity(paddle, block):
  rng = np.random.default_rng(1)
  boxes = _random_boxes(rng, (60,), 1.0)
  scores = rng.uniform(0, 1, 60).astype(np.float32)
  want = paddle.vision.ops.nms(paddle.to_tensor(boxes), 0.4, paddle.to_tensor(scores)).numpy()
  idx, valid = nms(jnp.asarray(boxes), jnp.asarray(scores), 0.4, 60)
  np.testing.assert_array_equal(np.asarray(idx)[np.asarray(valid)], want)


CASES = [  # score_threshold, nms_top_k, keep_top_k, normalized, background_label, max_candidates
    (0.3, -1, -1, True, -1, 4096),
    (0.3, 20, 30, False, -1, 4096),
    (0.3, 5, 10, True, 0, 4096),
    (0.3, 50, 8, False, -1, 4096),
    (0.3, 4, 100, False, -1, 4096),
    (0.9, 100, 20, False, -1, 128),  # fewer than max_candidates pass the threshold
    # max_candidates -1: Paddle's per-class kernel, no cap across classes
    (0.3, -1, -1, True, -1, -1),
    (0.3, 20, 30, False, -1, -1),
    (0.3, 5, 10, True, 0, -1),
    (0.05, -1, 100, False, 0, -1),   # the R-CNN settings (BBoxHead.nms)
    (0.3, 4, 100, False, -1, -1),
]


@pytest.mark.parametrize('case', CASES)
def test_multiclass_nms_matches_reference(case, block):
  score_thr, nms_top_k, keep_top_k, normalized, bg, max_cand = case
  rng = np.random.default_rng(2)
  n, m, c = 2, 60, 4
  boxes = _random_boxes(rng, (n, m), 1.0 if normalized else 100.0)
  scores = rng.uniform(0, 1, (n, m, c)).astype(np.float32)
  out = multiclass_nms(jnp.asarray(boxes), jnp.asarray(scores), score_thr, nms_top_k, keep_top_k,
                       0.45, normalized, bg, max_cand)
  if keep_top_k > 0:
    k = keep_top_k
  elif max_cand > 0:
    k = min(max_cand, m * c)
  else:  # no cap: every class's best min(nms_top_k, M)
    k = (c - (0 <= bg < c)) * (m if nms_top_k < 0 else min(nms_top_k, m))
  assert out['boxes'].shape == (n, k, 4) and out['classes'].dtype == jnp.int32
  for i in range(n):
    want = _multiclass_reference(boxes[i], scores[i], score_thr, nms_top_k, keep_top_k, 0.45,
                                 normalized, bg)
    np.testing.assert_allclose(_our_rows(out, i), want, rtol=1e-6)
    s = np.asarray(out['scores'][i])
    assert np.all(np.diff(s[np.asarray(out['valid'][i])]) <= 0)
    assert np.all(s[~np.asarray(out['valid'][i])] == 0)


def test_multiclass_nms_classes_do_not_suppress_each_other():
  boxes = jnp.array([[[0., 0., 10., 10.], [0., 0., 10., 10.]]])
  scores = jnp.array([[[0.9, 0.8], [0.7, 0.6]]])
  out = jax.jit(lambda b, s: multiclass_nms(b, s, 0.1, -1, 3, 0.5, False))(boxes, scores)
  np.testing.assert_allclose(out['scores'][0], [0.9, 0.8, 0.0])
  assert list(np.asarray(out['classes'][0])) == [0, 1, 0]
  assert list(np.asarray(out['valid'][0])) == [True, True, False]


def test_multiclass_nms_per_class_boxes_equal_shared_boxes_broadcast():
  rng = np.random.default_rng(1)
  m, c = 30, 5
  xy = rng.uniform(0, 50, size=(1, m, 2))
  wh = rng.uniform(5, 30, size=(1, m, 2))
  boxes = jnp.asarray(np.concatenate([xy, xy + wh], -1), jnp.float32)
  scores = jnp.asarray(rng.uniform(size=(1, m, c)), jnp.float32)
  got = multiclass_nms(jnp.broadcast_to(boxes[:, :, None], (1, m, c, 4)), scores, 0.3, -1, 15,
                       0.5, normalized=False, background_label=0)
  want = multiclass_nms(boxes, scores, 0.3, -1, 15, 0.5, normalized=False, background_label=0)
  for k in ('boxes', 'scores', 'classes', 'valid'):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


def test_multiclass_nms_per_class_boxes_use_their_class_box():
  # Class 0: the two candidates share a box (one is suppressed); class 1: disjoint boxes.
  boxes = jnp.array([[[[0., 0., 10., 10.], [0., 0., 10., 10.]],
                      [[0., 0., 10., 10.], [50., 50., 60., 60.]]]])  # [1, M=2, C=2, 4]
  scores = jnp.array([[[0.9, 0.8], [0.7, 0.6]]])
  out = multiclass_nms(boxes, scores, 0.1, -1, 4, 0.5, False)
  np.testing.assert_allclose(out['scores'][0], [0.9, 0.8, 0.6, 0.0])
  assert list(np.asarray(out['classes'][0])) == [0, 1, 1, 0]
  np.testing.assert_allclose(out['boxes'][0, 2], [50., 50., 60., 60.])


def test_gather_valid_zeroes_empty_slots():
  boxes = jnp.arange(12.0).reshape(3, 4)
  classes = jnp.array([4, 5, 6], jnp.int32)
  b, c = nms_module.gather_valid(jnp.array([2, 0]), jnp.array([True, False]), boxes, classes)
  np.testing.assert_array_equal(b, [[8., 9., 10., 11.], [0., 0., 0., 0.]])
  assert c.dtype == jnp.int32 and list(np.asarray(c)) == [6, 0]


@pytest.mark.parametrize('case', CASES)
def test_multiclass_nms_parity(paddle, case, block):
  from paddle import _C_ops
  score_thr, nms_top_k, keep_top_k, normalized, bg, max_cand = case
  rng = np.random.default_rng(3)
  n, m, c = 3, 60, 4
  boxes = _random_boxes(rng, (n, m), 1.0 if normalized else 100.0)
  scores = rng.uniform(0, 1, (n, m, c)).astype(np.float32)
  # multiclass_nms3 takes scores as [N, C, M]; rows are (label, score, x1, y1, x2, y2).
  rows, _, counts = _C_ops.multiclass_nms3(
      paddle.to_tensor(boxes), paddle.to_tensor(scores.transpose(0, 2, 1)), None, score_thr,
      nms_top_k, keep_top_k, 0.45, normalized, 1.0, bg)
  rows, counts = rows.numpy(), counts.numpy()
  out = multiclass_nms(jnp.asarray(boxes), jnp.asarray(scores), score_thr, nms_top_k, keep_top_k,
                       0.45, normalized, bg, max_cand)
  start = 0
  for i in range(n):
    want = _sorted_rows(rows[start:start + counts[i]])
    start += counts[i]
    np.testing.assert_allclose(_our_rows(out, i), want, rtol=1e-6)


def _clustered(rng, k, clusters):
  centers = rng.uniform(0, 800, (clusters, 2))[rng.integers(0, clusters, k)]
  centers = centers + rng.normal(0, 15, (k, 2))
  wh = rng.uniform(20, 120, (k, 2))
  return np.concatenate([centers - wh / 2, centers + wh / 2], 1).astype(np.float32)


@pytest.mark.parametrize('k,clusters,num_classes,max_keep,legacy', [
    (300, 3, 1, 300, False),    # long suppression chains in few crowded clusters
    (300, 20, 3, 40, True),     # classes apart, stops at max_keep
    (257, 10, 1, 1, False),     # a partial last block; keep only the best
    (5, 2, 1, 5, False),        # fewer candidates than a block
])
def test_blocked_keep_equals_one_candidate_per_step(k, clusters, num_classes, max_keep, legacy):
  rng = np.random.default_rng(k + clusters)
  boxes = _clustered(rng, k, clusters)
  boxes[3] = boxes[4] = [5, 5, 5, 5]  # two of zero area: IoU 0 / 0 is NaN, which suppresses
  valid = jnp.asarray(rng.random(k) > 0.1)
  classes = jnp.asarray(rng.integers(0, num_classes, k).astype(np.int32))
  args = (jnp.asarray(boxes), valid, classes, 0.5, legacy, max_keep)
  want = nms_module.greedy_keep(*args, block=1)
  assert 0 < int(want.sum()) <= max_keep
  for b in (2, 7, 64, 128, 512):
    got = jax.jit(lambda *a, b=b: nms_module.greedy_keep(*a[:3], 0.5, legacy, max_keep, block=b))(
        *args[:3])
    np.testing.assert_array_equal(got, want, err_msg=f'block {b}')


def test_default_block_follows_the_backend():
  assert nms_module.default_block() == (1 if jax.default_backend() == 'cpu' else nms_module.BLOCK)
