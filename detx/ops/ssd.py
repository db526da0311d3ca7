"""SSD training targets and loss: Paddle 1.5's `bipartite_match`, `mine_hard_examples`
(max_negative) and `fluid.layers.ssd_loss`, and the detection output
(`fluid.layers.detection_output`), as SSD MobileNet-V1 used them at PaddleDetection 597145c.

Boxes are normalised xyxy (no +1). Ground truth comes padded to G slots with a
validity mask; classes are 1-based, 0 = background.
"""
import jax
import jax.numpy as jnp

from detx.ops.boxes import box_iou, decode_boxes, encode_boxes
from detx.ops.losses import smooth_l1
from detx.ops.nms import multiclass_nms

_EPS = 1e-6


def bipartite_match(dist, row_valid, match_type: str = 'per_prediction',
                    overlap_threshold: float = 0.5):
  """Paddle's bipartite_match for one image: dist [G, P] (IoU of ground truth rows with
  prior columns), row_valid [G].

  Greedy bipartite matching (Paddle's kernel for fewer than 130 rows): repeatedly the
  largest remaining entry >= 1e-6 over unmatched rows and columns (first in column-major
  order on ties) matches its row and column. match_type 'per_prediction' then gives
  every unmatched column the row of its largest entry when that is >= overlap_threshold.
  Returns (match [P] int32, -1 = unmatched; match_dist [P], 0 where unmatched)."""
  g, p = dist.shape
  dist = jnp.where(row_valid[:, None], dist, 0.0)
  col_major = dist.T                                               # [P, G]

  def step(_, state):
    match, mdist, row_free = state
    ok = (match < 0)[:, None] & row_free[None, :] & (col_major >= _EPS)
    flat = jnp.where(ok, col_major, -1.0).reshape(-1)
    k = jnp.argmax(flat)
    found = flat[k] > -1.0
    j, i = k // g, k % g
    match = jnp.where(found, match.at[j].set(i.astype(jnp.int32)), match)
    mdist = jnp.where(found, mdist.at[j].set(flat[k]), mdist)
    row_free = jnp.where(found, row_free.at[i].set(False), row_free)
    return match, mdist, row_free

  state = (jnp.full((p,), -1, jnp.int32), jnp.zeros((p,), dist.dtype), row_valid)
  match, mdist, _ = jax.lax.fori_loop(0, g, step, state)
  if match_type == 'per_prediction':
    cand = jnp.where((col_major >= _EPS) & (col_major >= overlap_threshold), col_major, -1.0)
    best = jnp.argmax(cand, axis=1).astype(jnp.int32)
    best_dist = jnp.max(cand, axis=1)
    take = (match < 0) & (best_dist > -1.0)
    match = jnp.where(take, best, match)
    mdist = jnp.where(take, best_dist, mdist)
  elif match_type != 'bipartite':
    raise ValueError(f"match_type must be 'bipartite' or 'per_prediction', got {match_type!r}")
  return match, mdist


def mine_hard_examples(cls_loss, match, match_dist, neg_pos_ratio: float = 3.0,
                       neg_dist_threshold: float = 0.5):
  """Paddle's mine_hard_examples, mining_type 'max_negative', for one image: the
  int(num_pos * neg_pos_ratio) unmatched priors with match_dist < neg_dist_threshold and
  the largest cls_loss [P] (ties: lower index first). Returns the negative mask [P]."""
  eligible = (match < 0) & (match_dist < neg_dist_threshold)
  num_pos = jnp.sum(match >= 0)
  count = jnp.minimum(jnp.floor(num_pos * neg_pos_ratio).astype(jnp.int32),
                      jnp.sum(eligible))
  order = jnp.argsort(jnp.where(eligible, -cls_loss, jnp.inf), stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
  return eligible & (rank < count)


def ssd_targets(gt_boxes, gt_labels, gt_valid, priors, prior_var, conf, *,
                overlap_threshold: float = 0.5, neg_pos_ratio: float = 3.0,
                neg_overlap: float = 0.5, background_label: int = 0):
  """ssd_loss's target assignment for one image (no gradient): gt_boxes [G, 4],
  gt_labels [G] (1-based), gt_valid [G], priors / prior_var [P, 4], conf [P, C] logits.
  Returns (labels [P] int32, positive [P], negative [P], loc targets [P, 4])."""
  iou = box_iou(gt_boxes, priors)
  match, mdist = bipartite_match(iou, gt_valid, 'per_prediction', overlap_threshold)
  pos = match >= 0
  idx = jnp.maximum(match, 0)
  labels = jnp.where(pos, gt_labels[idx], background_label).astype(jnp.int32)
  cls_loss = _softmax_ce(jax.lax.stop_gradient(conf), labels)
  neg = mine_hard_examples(cls_loss, match, mdist, neg_pos_ratio, neg_overlap)
  encoded = encode_boxes(priors, gt_boxes[idx], prior_var, legacy=False, box_coder_centre=True)
  loc_t = jnp.where(pos[:, None], encoded, 0.0)
  return labels, pos, neg, jax.lax.stop_gradient(loc_t)


def _softmax_ce(logits, labels):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def ssd_loss(loc, conf, gt_boxes, gt_labels, gt_valid, priors, prior_var, *,
             overlap_threshold: float = 0.5, neg_pos_ratio: float = 3.0,
             neg_overlap: float = 0.5, background_label: int = 0, group_images: int = 0):
  """fluid.layers.ssd_loss summed over the batch (PaddleDetection's SSD reduce_sum):
  loc [N, P, 4], conf [N, P, C] logits, gt [N, G, ...], priors [P, 4].

  Per image: the softmax cross-entropy of the positives (matched) and the mined
  negatives (background target) plus smooth-L1 (sigma 1, summed over the 4 deltas) of
  the positives' encoded boxes; the sum over priors is divided by the number of
  positives in the batch (normalize=True; detx takes at least 1, where Paddle divides
  0 by 0). group_images > 0: the batch is split into groups of that many consecutive
  images (Paddle's per-GPU batches), each normalised by its own positives, and the
  groups' losses averaged (the multi-GPU gradient mean); 0 = one group.
  Returns {'loss', 'loss_conf', 'loss_loc', 'num_pos'}."""
  fn = lambda b, l, v, c: ssd_targets(
      b, l, v, priors, prior_var, c, overlap_threshold=overlap_threshold,
      neg_pos_ratio=neg_pos_ratio, neg_overlap=neg_overlap, background_label=background_label)
  labels, pos, neg, loc_t = jax.vmap(fn)(gt_boxes, gt_labels, gt_valid, conf)
  conf_loss = _softmax_ce(conf, labels) * (pos | neg)
  loc_loss = smooth_l1(loc.astype(jnp.float32) - loc_t, 1.0).sum(-1) * pos
  n = loc.shape[0]
  g = group_images if 0 < group_images < n else n
  if n % g:
    raise ValueError(f'ssd_loss: batch {n} is not a multiple of group_images {g}')
  per_group = lambda x: x.reshape(n // g, -1).sum(1)
  norm = jnp.maximum(per_group(pos.astype(jnp.float32)), 1.0)
  out = {'loss_conf': jnp.mean(per_group(conf_loss) / norm),
         'loss_loc': jnp.mean(per_group(loc_loss) / norm)}
  out['loss'] = out['loss_conf'] + out['loss_loc']
  out['num_pos'] = jnp.sum(pos).astype(jnp.float32)
  return out


def ssd_detection_output(loc, conf, priors, prior_var, *, background_label: int = 0,
                         nms_threshold: float = 0.45, nms_top_k: int = 400,
                         keep_top_k: int = 200, score_threshold: float = 0.01,
                         max_candidates: int = -1):
  """fluid.layers.detection_output: box_coder decode_center_size (normalised, no clamp)
  of loc [N, P, 4] on the priors, softmax of conf [N, P, C], then multiclass NMS
  (normalised IoU) skipping background_label. Returns multiclass_nms's dict with
  normalised boxes and classes in conf's numbering (background included)."""
  boxes = decode_boxes(priors[None], loc.astype(jnp.float32), prior_var[None],
                       legacy=False, clip=None)
  scores = jax.nn.softmax(conf.astype(jnp.float32), axis=-1)
  return multiclass_nms(boxes, scores, score_threshold, nms_top_k, keep_top_k, nms_threshold,
                        normalized=True, background_label=background_label,
                        max_candidates=max_candidates)
