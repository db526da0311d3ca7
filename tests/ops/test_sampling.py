"""Target assignment and RoI sampling.

paddlepaddle 3.x no longer ships rpn_target_assign / generate_proposal_labels, so the
deterministic paths (use_random=False; cascade mode) are checked against a loop-by-loop
numpy transcription of Paddle's C++ kernels, and the random paths by their invariants.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import (anchor_generator, decode_boxes, expand_box_targets, rpn_target_assign,
                      sample_rois)

IM_H, IM_W = 256.0, 320.0


def _overlaps(a, b):
  """Paddle's BboxOverlaps in float32."""
  a = a.astype(np.float32)[:, None, :]
  b = b.astype(np.float32)[None, :, :]
  one = np.float32(1)
  area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
  area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
  iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one, 0)
  ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one, 0)
  inter = iw * ih
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(inter == 0, 0, inter / (area_a + area_b - inter)).astype(np.float32)


def _box_to_delta(ex, gt, weights=(1.0, 1.0, 1.0, 1.0)):
  ew, eh = ex[:, 2] - ex[:, 0] + 1, ex[:, 3] - ex[:, 1] + 1
  gw, gh = gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1
  ecx, ecy = ex[:, 0] + 0.5 * ew, ex[:, 1] + 0.5 * eh
  gcx, gcy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
  d = np.stack([(gcx - ecx) / ew, (gcy - ecy) / eh, np.log(gw / ew), np.log(gh / eh)], 1)
  return d / np.asarray(weights)


def _rpn_reference(anchors, gt, crowd, im_info, batch, fg_fraction, pos, neg, straddle):
  """Paddle's rpn_target_assign with use_random=False: labels [A], targets {anchor: delta}."""
  h, w = im_info[0], im_info[1]
  if straddle >= 0:
    inside = [i for i, a in enumerate(anchors) if a[0] >= -straddle and a[1] >= -straddle and
              a[2] < w + straddle and a[3] < h + straddle]
  else:
    inside = list(range(len(anchors)))
  gt_ids = [j for j in range(len(gt)) if not crowd[j]]
  ov = _overlaps(anchors[inside], gt[gt_ids])
  anchor_max, argmax, gt_max = ov.max(1), ov.argmax(1), ov.max(0)
  fg = [i for i in range(len(inside))
        if any(abs(ov[i, j] - gt_max[j]) < 1e-5 for j in range(len(gt_ids))) or
        anchor_max[i] >= pos]
  fg = fg[:int(fg_fraction * batch)]
  label = -np.ones(len(inside), int)
  label[fg] = 1
  bg = [i for i in range(len(inside)) if anchor_max[i] < neg][:batch - len(fg)]
  label[bg] = 0
  labels = -np.ones(len(anchors), int)
  labels[inside] = label
  targets = {}
  for i in np.flatnonzero(label == 1):
    targets[inside[i]] = (_box_to_delta(anchors[inside[i]][None], gt[gt_ids][argmax[i]][None])[0],
                          gt_ids[argmax[i]])
  return labels, targets


def _rois_reference(rois, gt, classes, crowd, scale, batch, fg_fraction, fg_thresh, hi, lo,
                    weights, cascade):
  """Paddle's generate_proposal_labels (use_random=False) on original-scale boxes."""
  boxes = np.concatenate([gt, rois / np.float32(scale)])
  ov = _overlaps(boxes, gt)
  fg, bg, gt_inds = [], [], []
  for i in range(len(boxes)):
    m = ov[i].max()
    if i < len(gt) and crowd[i]:
      m = -1.0
    if cascade and (boxes[i, 2] - boxes[i, 0] + 1 <= 0 or boxes[i, 3] - boxes[i, 1] + 1 <= 0):
      continue
    if m >= fg_thresh:
      j = next(j for j in range(len(gt)) if abs(m - ov[i, j]) < 1e-5)
      fg.append(i)
      gt_inds.append(j)
    elif lo <= m < hi:
      bg.append(i)
  if not cascade:
    k = int(math.floor(batch * fg_fraction))
    fg, gt_inds = fg[:k], gt_inds[:k]
    bg = bg[:batch - len(fg)]
  sel = fg + bg
  labels = np.concatenate([classes[gt_inds], np.zeros(len(bg), int)]).astype(int)
  targets = np.zeros((len(sel), 4))
  targets[:len(fg)] = _box_to_delta(boxes[fg], gt[gt_inds], weights)
  return boxes[sel] * scale, labels, targets, ov.max(1)[sel]


def _scene(seed, num_gt=6, pad=4):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, [IM_W - 40, IM_H - 40], (num_gt, 2))
  wh = rng.uniform(12, 140, (num_gt, 2))
  gt = np.concatenate([xy, np.minimum(xy + wh, [IM_W - 1, IM_H - 1])], 1).astype(np.float32)
  gt = np.concatenate([gt, np.zeros((pad, 4), np.float32)])
  valid = np.arange(num_gt + pad) < num_gt
  crowd = np.zeros(num_gt + pad, bool)
  crowd[num_gt - 1] = True
  classes = np.where(valid, rng.integers(1, 81, num_gt + pad), 0).astype(np.int32)
  return rng, gt, valid, crowd, classes


def _anchors():
  return np.asarray(anchor_generator((16, 20), [32.0, 64.0, 128.0], [0.5, 1.0, 2.0], 16.0))


RPN_CASES = [  # seed, batch, fg_fraction, straddle
    (0, 256, 0.5, 0.0), (1, 16, 0.25, 0.0), (2, 256, 0.5, -1.0), (3, 32, 0.5, 8.0),
]


@pytest.mark.parametrize('case', RPN_CASES)
def test_rpn_target_assign_matches_reference(case):
  seed, batch, fg_fraction, straddle = case
  _, gt, valid, crowd, _ = _scene(seed)
  anchors = _anchors()
  im_info = np.array([IM_H, IM_W, 1.0], np.float32)
  real = np.flatnonzero(valid)
  want_labels, want_targets = _rpn_reference(anchors, gt[real], crowd[real], im_info, batch,
                                             fg_fraction, 0.7, 0.3, straddle)
  out = rpn_target_assign(jnp.asarray(anchors), jnp.asarray(gt), jnp.asarray(valid),
                          jnp.asarray(crowd), jnp.asarray(im_info), None, batch, fg_fraction,
                          straddle_thresh=straddle, use_random=False)
  np.testing.assert_array_equal(np.asarray(out['labels']), want_labels)
  fg = np.flatnonzero(want_labels == 1)
  assert len(fg) > 0
  np.testing.assert_array_equal(np.asarray(out['box_weights']), want_labels == 1)
  for i in fg:
    np.testing.assert_allclose(np.asarray(out['box_targets'][i]), want_targets[i][0], atol=1e-5)
    assert int(out['matched_gt'][i]) == real[want_targets[i][1]]
  assert np.all(np.asarray(out['box_targets'])[want_labels != 1] == 0)


@pytest.mark.parametrize('batch', [10000, 8])
def test_rpn_small_gt_best_anchor_can_turn_background(batch):
  # A 6 x 6 GT has IoU < 0.3 with every anchor: its best anchors are foreground
  # candidates and background candidates at once; when sampled as background (all
  # background candidates fit in a large batch) they end up background, as in Paddle.
  anchors = _anchors()
  gt = np.array([[100, 100, 105, 105], [0, 0, 0, 0]], np.float32)
  valid, crowd = np.array([True, False]), np.zeros(2, bool)
  im_info = np.array([IM_H, IM_W, 1.0], np.float32)
  want, _ = _rpn_reference(anchors, gt[:1], crowd[:1], im_info, batch, 0.5, 0.7, 0.3, 0.0)
  out = rpn_target_assign(jnp.asarray(anchors), jnp.asarray(gt), jnp.asarray(valid),
                          jnp.asarray(crowd), jnp.asarray(im_info), None, batch,
                          use_random=False)
  np.testing.assert_array_equal(np.asarray(out['labels']), want)
  best = np.argmax(_overlaps(anchors, gt[:1])[:, 0])
  assert want[best] == (0 if batch > 1000 else 1)


def test_rpn_target_assign_invariants():
  _, gt, valid, crowd, _ = _scene(5)
  anchors = _anchors()
  im_info = jnp.array([IM_H, IM_W, 1.0])
  fn = jax.jit(lambda k: rpn_target_assign(jnp.asarray(anchors), jnp.asarray(gt),
                                           jnp.asarray(valid), jnp.asarray(crowd), im_info, k))
  outs = [fn(jax.random.PRNGKey(s)) for s in (0, 0, 1)]
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_array_equal(a, b)  # deterministic per key
  assert np.any(np.asarray(outs[0]['labels']) != np.asarray(outs[2]['labels']))
  good = valid & ~crowd
  iou = _overlaps(anchors, gt[good])
  inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < IM_W) &
            (anchors[:, 3] < IM_H))
  best = np.any(np.abs(iou - np.where(inside[:, None], iou, -1).max(0)) < 1e-5, 1)
  for out in outs:
    labels = np.asarray(out['labels'])
    fg, bg = labels == 1, labels == 0
    assert fg.sum() <= 128 and fg.sum() + bg.sum() == 256
    assert np.all(labels[~inside] == -1)
    assert np.all((iou.max(1) >= 0.7)[fg] | best[fg])
    assert np.all(iou.max(1)[bg] < 0.3)
    # Targets decode back to the matched GT.
    m = np.asarray(out['matched_gt'])[fg]
    assert np.all(good[m])
    dec = decode_boxes(jnp.asarray(anchors[fg]), out['box_targets'][fg], clip=None)
    np.testing.assert_allclose(np.asarray(dec), gt[m], atol=1e-3)


def test_rpn_target_assign_batched_and_no_gt():
  _, gt, valid, crowd, _ = _scene(6)
  anchors = jnp.asarray(_anchors())
  gts = jnp.stack([jnp.asarray(gt), jnp.asarray(gt)])
  valids = jnp.stack([jnp.asarray(valid), jnp.zeros_like(jnp.asarray(valid))])
  crowds = jnp.stack([jnp.asarray(crowd)] * 2)
  infos = jnp.array([[IM_H, IM_W, 1.0]] * 2)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  out = jax.vmap(lambda g, v, c, i, k: rpn_target_assign(anchors, g, v, c, i, k))(
      gts, valids, crowds, infos, keys)
  assert out['labels'].shape == (2, anchors.shape[0])
  # Without GT every sampled anchor is background.
  assert int((out['labels'][1] == 1).sum()) == 0 and int((out['labels'][1] == 0).sum()) == 256


def _proposals(rng, gt, valid, n):
  """Jittered copies of the GT boxes and random boxes, inside the image."""
  real = gt[valid]
  base = real[rng.integers(0, len(real), n)]
  size = np.concatenate([base[:, 2:] - base[:, :2]] * 2, 1)
  jit = base + rng.normal(0, 0.15, (n, 4)) * size
  xy = rng.uniform(0, [IM_W - 20, IM_H - 20], (n, 2))
  rand = np.concatenate([xy, xy + rng.uniform(8, 120, (n, 2))], 1)
  boxes = np.where(rng.uniform(size=(n, 1)) < 0.5, jit, rand)
  boxes = np.clip(boxes, 0, [IM_W - 1, IM_H - 1, IM_W - 1, IM_H - 1])
  x1, x2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
  y1, y2 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
  return np.stack([x1, y1, x2, y2], 1).astype(np.float32)


ROI_CASES = [  # seed, batch, scale, cascade, weights
    (0, 512, 1.0, False, (0.1, 0.1, 0.2, 0.2)),
    (1, 64, 2.0, False, (0.1, 0.1, 0.2, 0.2)),  # few slots: fg and bg both truncated
    (2, 512, 2.0, True, (0.05, 0.05, 0.1, 0.1)),
]


@pytest.mark.parametrize('case', ROI_CASES)
def test_sample_rois_matches_reference(case):
  seed, batch, scale, cascade, weights = case
  rng, gt, valid, crowd, classes = _scene(seed)
  rois = _proposals(rng, gt, valid, 300)
  rois[:3] = [[10, 10, 5, 30], [0, 0, 0, 0], [50, 60, 70, 59]]  # degenerate boxes
  rois_valid = np.ones(300, bool)
  rois_valid[-20:] = False
  real = np.flatnonzero(valid)
  gt_in = gt * np.float32(scale)
  gt_orig = gt_in / np.float32(scale)
  want_rois, want_labels, want_targets, want_ov = _rois_reference(
      rois[rois_valid], gt_orig[real], classes[real], crowd[real], scale, batch, 0.25, 0.5, 0.5,
      0.0, weights, cascade)
  out = sample_rois(jnp.asarray(rois), jnp.asarray(rois_valid), jnp.asarray(gt_in),
                    jnp.asarray(classes), jnp.asarray(valid), jnp.asarray(crowd), None,
                    batch_size_per_im=batch, bbox_reg_weights=weights, is_cascade=cascade,
                    im_scale=scale, use_random=False)
  slots = len(gt) + len(rois) if cascade else batch
  assert out['rois'].shape == (slots, 4) and out['labels'].shape == (slots,)
  v = np.asarray(out['valid'])
  n = len(want_labels)
  assert v.sum() == n and np.all(v[:n])
  np.testing.assert_allclose(np.asarray(out['rois'])[:n], want_rois, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(out['labels'])[:n], want_labels)
  np.testing.assert_allclose(np.asarray(out['box_targets'])[:n], want_targets, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out['max_overlap'])[:n], want_ov, atol=1e-6)
  fg = want_labels > 0
  np.testing.assert_array_equal(np.asarray(out['box_weights'])[:n], fg)
  np.testing.assert_array_equal(np.asarray(out['box_class'])[:n], want_labels)


def test_sample_rois_invariants():
  rng, gt, valid, crowd, classes = _scene(7)
  rois = _proposals(rng, gt, valid, 1000)
  scale = 1.5
  args = (jnp.asarray(rois), jnp.ones(1000, bool), jnp.asarray(gt), jnp.asarray(classes),
          jnp.asarray(valid), jnp.asarray(crowd))
  fn = jax.jit(lambda k, bg: sample_rois(*args, k, im_scale=scale, bg_sampling=bg),
               static_argnums=1)
  a, b, c = (fn(jax.random.PRNGKey(s), 'paddle') for s in (0, 0, 1))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert np.any(np.asarray(a['rois']) != np.asarray(c['rois']))
  boxes = np.concatenate([gt, rois])
  ov = _overlaps(boxes / scale, gt / scale)
  ov = np.where(valid[None, :], ov, -1).max(1)
  ov[:len(gt)][crowd] = -1
  crowd_boxes = gt[valid & crowd]
  for out in (a, c, fn(jax.random.PRNGKey(2), 'uniform')):
    v, w = np.asarray(out['valid']), np.asarray(out['box_weights']) > 0
    labels = np.asarray(out['labels'])
    assert v.sum() == 512 and 0 < w.sum() <= 128 and np.all(v[w])
    mo = np.asarray(out['max_overlap'])
    assert np.all(mo[w] >= 0.5) and np.all((mo[v & ~w] >= 0) & (mo[v & ~w] < 0.5))
    m = np.asarray(out['matched_gt'])[w]
    np.testing.assert_array_equal(labels[w], classes[m])
    assert np.all(labels[v & ~w] == 0) and np.all(classes[m] > 0)
    # The crowd GT box itself is never sampled.
    r = np.asarray(out['rois'])[v]
    assert not np.any(np.all(np.abs(r[:, None, :] - crowd_boxes[None]) < 1e-6, -1))
    # Targets decode (at the original scale) back to the matched GT.
    ref = jnp.asarray(np.asarray(out['rois'])[w] / scale)
    dec = decode_boxes(ref, out['box_targets'][w], (0.1, 0.1, 0.2, 0.2), clip=None)
    np.testing.assert_allclose(np.asarray(dec), gt[m] / scale, atol=1e-3)
    # The sampled rows are a subset of the candidates with the reported overlaps.
    idx = [int(np.flatnonzero(np.all(boxes == row, 1))[0]) for row in r]
    np.testing.assert_allclose(ov[idx], mo[v], atol=1e-6)


def test_paddle_background_sampling_keeps_the_middle_ranks():
  rng, gt, valid, crowd, classes = _scene(8)
  rois = _proposals(rng, gt, valid, 1500)
  args = (jnp.asarray(rois), jnp.ones(1500, bool), jnp.asarray(gt), jnp.asarray(classes),
          jnp.asarray(valid), jnp.asarray(crowd))
  ref = sample_rois(*args, None, use_random=False)
  n_fg = int(ref['box_weights'].sum())
  n_bg = 512 - n_fg
  bg_first = np.asarray(ref['rois'])[n_fg:512]  # the first background candidates, in order
  for seed in range(3):
    out = sample_rois(*args, jax.random.PRNGKey(seed))
    assert int(out['box_weights'].sum()) == n_fg
    got = np.asarray(out['rois'])[n_fg:512]
    # Candidates ranked n_fg .. n_bg - 1 are always kept, the first n_fg are random.
    kept = {tuple(r) for r in got}
    assert all(tuple(r) in kept for r in bg_first[n_fg:n_bg])
    assert not all(tuple(r) in kept for r in bg_first[:n_fg])


def test_class_agnostic_and_expanded_targets():
  rng, gt, valid, crowd, classes = _scene(9)
  rois = _proposals(rng, gt, valid, 200)
  out = sample_rois(jnp.asarray(rois), jnp.ones(200, bool), jnp.asarray(gt),
                    jnp.asarray(classes), jnp.asarray(valid), jnp.asarray(crowd),
                    jax.random.PRNGKey(0), batch_size_per_im=128, class_agnostic=True)
  fg = np.asarray(out['box_weights']) > 0
  np.testing.assert_array_equal(np.asarray(out['box_class']), fg.astype(int))
  targets, weights = expand_box_targets(out['box_targets'], out['box_class'], 2)
  assert targets.shape == weights.shape == (128, 8)
  np.testing.assert_array_equal(np.asarray(targets)[:, 4:], np.asarray(out['box_targets']))
  assert np.all(np.asarray(targets)[:, :4] == 0)
  np.testing.assert_array_equal(np.asarray(weights)[:, 4:], np.repeat(fg[:, None], 4, 1))
  t81, w81 = expand_box_targets(out['box_targets'], out['labels'], 81)
  lab = np.asarray(out['labels'])
  for i in np.flatnonzero(fg)[:5]:
    np.testing.assert_array_equal(np.asarray(t81)[i, 4 * lab[i]:4 * lab[i] + 4],
                                  np.asarray(out['box_targets'])[i])
    assert float(w81[i].sum()) == 4
  assert float(w81[~fg].sum()) == 0
