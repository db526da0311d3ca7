"""RetinaNet ops: retinanet_target_assign, retinanet_detection_output.

paddlepaddle 3.x ships neither of Paddle 1.x's ops (neither `_legacy_C_ops` nor the
legacy static op registry has them), so each is checked against a loop-by-loop numpy
transcription of its C++ kernel (paddle/fluid/operators/detection/*). The focal loss
is tested in tests/ops/test_losses.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import (anchor_generator, retinanet_anchor_sizes, retinanet_detection_output,
                      retinanet_target_assign)
from tests.ops.test_sampling import _box_to_delta, _overlaps

# ------------------------------------------------------------ retinanet_target_assign

def _assign_reference(anchors, gt, labels, valid, crowd, pos, neg):
  """RetinanetTargetAssignKernel for one image: (loc_index, score_index, target_label,
  target_bbox, fg_num), the op's outputs in its order."""
  keep = [j for j in range(len(gt)) if valid[j] and not crowd[j]]
  ov = _overlaps(anchors, gt[keep])  # [A, G']
  num = len(anchors)
  if keep:
    anchor_max, argmax, gt_max = ov.max(1), ov.argmax(1), ov.max(0)
  else:  # Eigen's max over an empty axis is the lowest float
    anchor_max, argmax, gt_max = np.full(num, -np.finfo(np.float32).max), np.zeros(num, int), []
  target = -np.ones(num, int)
  fake = []
  for i in range(num):
    best = any(abs(ov[i, j] - gt_max[j]) < 1e-5 for j in range(len(keep)))
    if best or anchor_max[i] >= pos:
      fake.append(i)
  target[fake] = 1
  target[[i for i in range(num) if anchor_max[i] < neg]] = 0
  fg = [i for i in range(num) if target[i] == 1]
  bg = [i for i in range(num) if target[i] == 0]
  lbl = [labels[keep][argmax[i]] for i in fg] + [0] * len(bg)
  boxes = _box_to_delta(anchors[fg], gt[keep][argmax[fg]]) if fg else np.zeros((0, 4))
  return fg, fg + bg, lbl, boxes, len(fake) + 1


def _retina_anchors(h, w):
  """Two RetinaNet levels (strides 8, 16) of an image of h x w pixels."""
  return np.concatenate([
      np.asarray(anchor_generator((h // s, w // s), retinanet_anchor_sizes(s), [1.0, 2.0, 0.5], s))
      for s in (8, 16)])


def _gt_scene(seed):
  """GTs in a 160 x 192 image: random boxes, a crowd box, padding, and two that test the
  best-anchor rule: a 6 x 6 box (its best IoU is below 0.4, so background wins) and a
  box whose best IoU lies in [0.4, 0.5) (kept as foreground)."""
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, [150, 120], (5, 2))
  wh = rng.uniform(20, 90, (5, 2))
  random = np.concatenate([xy, np.minimum(xy + wh, [191, 159])], 1)
  special = np.array([[100, 60, 105, 65], [40, 100, 140, 120]])
  crowd_box = np.array([[10, 10, 80, 80]])
  pad = np.zeros((3, 4))
  gt = np.concatenate([random, special, crowd_box, pad]).astype(np.float32)
  g = len(gt)
  valid = np.arange(g) < g - 3
  crowd = np.zeros(g, bool)
  crowd[g - 4] = True
  labels = np.where(valid, rng.integers(1, 81, g), 0).astype(np.int32)
  return gt, labels, valid, crowd


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_target_assign_matches_the_kernel(seed):
  anchors = _retina_anchors(160, 192)
  gt, labels, valid, crowd = _gt_scene(seed)
  loc, score, lbl, boxes, fg_num = _assign_reference(anchors, gt, labels, valid, crowd, 0.5, 0.4)
  t = jax.jit(retinanet_target_assign)(jnp.asarray(anchors), jnp.asarray(gt),
                                       jnp.asarray(labels), jnp.asarray(valid),
                                       jnp.asarray(crowd))
  got = np.asarray(t['labels'])
  fg, bg = np.flatnonzero(got > 0), np.flatnonzero(got == 0)
  assert list(fg) == loc and list(np.concatenate([fg, bg])) == score
  assert list(got[fg]) + [0] * len(bg) == lbl
  np.testing.assert_allclose(np.asarray(t['box_targets'])[fg], boxes, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(t['box_targets'])[got <= 0] == 0)
  assert np.array_equal(np.asarray(t['box_weights']), (got > 0).astype(np.float32))
  assert int(t['fg_num']) == fg_num
  # The scene exercises both halves of the best-anchor rule (PADDLEDET_SPEC §11).
  ov = _overlaps(anchors, gt)
  tiny, mid = ov[:, 5].argmax(), ov[:, 6].argmax()
  assert ov[tiny, 5] < 0.4 and got[tiny] == 0  # best anchor, but background wins
  assert 0.4 <= ov[mid, 6] < 0.5 and got[mid] == labels[6]  # forced foreground
  assert fg_num > len(fg) + 1  # fg_num counts the overridden candidates too


def test_target_assign_without_gt():
  anchors = _retina_anchors(64, 64)
  gt = np.array([[0, 0, 30, 30], [5, 5, 40, 40]], np.float32)
  for valid, crowd in (([False, False], [False, False]), ([True, True], [True, True])):
    t = retinanet_target_assign(jnp.asarray(anchors), jnp.asarray(gt), jnp.array([3, 4]),
                                jnp.array(valid), jnp.array(crowd))
    assert np.all(np.asarray(t['labels']) == 0) and int(t['fg_num']) == 1
    assert np.all(np.asarray(t['box_weights']) == 0)


# --------------------------------------------------------- retinanet_detection_output

def _jaccard(a, b):
  """JaccardOverlap(normalized=false) of the detection output kernel."""
  if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
    return 0.0
  area = lambda r: 0.0 if r[2] < r[0] or r[3] < r[1] else (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
  iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
  ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
  return iw * ih / (area(a) + area(b) - iw * ih)


def _detection_reference(scores, deltas, anchors, info, thr, nms_top_k, keep_top_k, nms_thr):
  """RetinanetDetectionOutputKernel for one image: [(class, score, box)], best first."""
  f32 = np.float32
  h, w, scale = (f32(v) for v in info)
  im_h = f32(np.floor(h / scale + f32(0.5)))
  im_w = f32(np.floor(w / scale + f32(0.5)))
  preds = {}
  for l, (s, d, a) in enumerate(zip(scores, deltas, anchors)):
    c_num = s.shape[1]
    flat = s.reshape(-1)
    t = thr if l < len(scores) - 1 else 0.0
    idx = sorted((i for i in range(len(flat)) if flat[i] > t), key=lambda i: -flat[i])
    for i in idx[:nms_top_k]:
      k, c = i // c_num, i % c_num
      aw, ah = a[k, 2] - a[k, 0] + f32(1), a[k, 3] - a[k, 1] + f32(1)
      acx, acy = a[k, 0] + aw / f32(2), a[k, 1] + ah / f32(2)
      cx, cy = d[k, 0] * aw + acx, d[k, 1] * ah + acy
      bw, bh = np.exp(d[k, 2]) * aw, np.exp(d[k, 3]) * ah
      box = [cx - bw / f32(2), cy - bh / f32(2), cx + bw / f32(2) - f32(1), cy + bh / f32(2) - f32(1)]
      lim = [im_w, im_h, im_w, im_h]
      box = [max(min(v / scale, m - f32(1)), f32(0)) for v, m in zip(box, lim)]
      preds.setdefault(c, []).append(box + [flat[i]])
  pairs = []
  for c in sorted(preds):
    dets = preds[c]
    kept = []
    for j in sorted(range(len(dets)), key=lambda j: -dets[j][4]):
      if all(_jaccard(dets[j], dets[q]) <= nms_thr for q in kept):
        kept.append(j)
    pairs += [(dets[j][4], c, dets[j][:4]) for j in kept]
  pairs = sorted(pairs, key=lambda p: -p[0])[:keep_top_k]
  return [(c, s, b) for s, c, b in pairs]


def _detection_case(seed, n=2, classes=4):
  """Three levels of random scores, deltas and RetinaNet anchors; the last level's scores
  all sit below the threshold (kept anyway: its threshold is 0)."""
  rng = np.random.default_rng(seed)
  shapes, strides = [(8, 10), (4, 5), (2, 3)], [8, 16, 32]
  anchors, scores, deltas = [], [], []
  for (fh, fw), s in zip(shapes, strides):
    a = np.asarray(anchor_generator((fh, fw), retinanet_anchor_sizes(s), [1.0, 2.0, 0.5], s))
    anchors.append(a)
    m = len(a)
    sc = rng.uniform(0, 0.25, (n, m, classes)) ** 2 * 4  # most below 0.05, some up to 0.25
    scores.append(sc.astype(np.float32))
    deltas.append((rng.normal(size=(n, m, 4)) * 0.3).astype(np.float32))
  scores[-1] = scores[-1] * np.float32(0.04 / scores[-1].max())
  info = np.array([[64, 80, 0.5], [64, 72, 1.5]], np.float32)
  return scores, deltas, anchors, info


@pytest.mark.parametrize('seed,nms_top_k,keep_top_k', [(0, 1000, 100), (1, 40, 25), (2, 1000, 2000)])
def test_detection_output_matches_the_kernel(seed, nms_top_k, keep_top_k):
  scores, deltas, anchors, info = _detection_case(seed)
  fn = jax.jit(retinanet_detection_output, static_argnums=(4, 5, 6, 7))
  out = jax.device_get(fn([jnp.asarray(s) for s in scores], [jnp.asarray(d) for d in deltas],
                          [jnp.asarray(a) for a in anchors], jnp.asarray(info), 0.05, nms_top_k,
                          keep_top_k, 0.5))
  assert out['boxes'].shape == (2, keep_top_k, 4)
  for i in range(2):
    want = _detection_reference([s[i] for s in scores], [d[i] for d in deltas], anchors,
                                info[i], 0.05, nms_top_k, keep_top_k, 0.5)
    v = out['valid'][i]
    assert v.sum() == len(want) and np.all(v[:v.sum()])
    assert list(out['classes'][i][v]) == [c for c, _, _ in want]
    np.testing.assert_allclose(out['scores'][i][v], [s for _, s, _ in want], rtol=1e-6)
    np.testing.assert_allclose(out['boxes'][i][v], np.array([b for _, _, b in want]),
                               rtol=1e-5, atol=1e-3)
    assert np.all(out['boxes'][i][~v] == 0) and np.all(out['scores'][i][~v] == 0)
    if keep_top_k > 1000:  # every survivor is kept, the last level's too
      assert np.any(np.array([s for _, s, _ in want]) < 0.05)
    if keep_top_k == 25:
      assert len(want) == 25  # the keep_top_k cut is exercised
