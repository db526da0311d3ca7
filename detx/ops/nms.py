"""Greedy non-maximum suppression with static shapes (counts carried as masks).

`nms` and `multiclass_nms` are the ops; `greedy_keep` (the suppression loop over
score-sorted candidates), `first_true` (the positions of the kept slots), `gather_valid`
(gather them, zero the empty slots) and `keep_detections` (all three, as a detection
dict) are their shared core, also used by the proposals and RetinaNet detection output."""
import jax
import jax.numpy as jnp
from jax import lax


def _overlap_row(box, boxes, legacy: bool):
  """IoU of one box with boxes [K, 4], following Paddle's NMS `JaccardOverlap`.

  Disjoint boxes give 0; otherwise the intersection is (x2' - x1' + o) * (y2' - y1' + o)
  with o = 1 when legacy; a box with x2 < x1 or y2 < y1 has area 0. No guard against
  an empty union: its NaN IoU suppresses, as in Paddle.
  """
  off = 1.0 if legacy else 0.0
  disjoint = ((boxes[:, 0] > box[2]) | (boxes[:, 2] < box[0]) |
              (boxes[:, 1] > box[3]) | (boxes[:, 3] < box[1]))

  def area(b):
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    return jnp.where((w < 0) | (h < 0), 0.0, (w + off) * (h + off))

  iw = jnp.minimum(boxes[:, 2], box[2]) - jnp.maximum(boxes[:, 0], box[0]) + off
  ih = jnp.minimum(boxes[:, 3], box[3]) - jnp.maximum(boxes[:, 1], box[1]) + off
  inter = iw * ih
  iou = inter / (area(box) + area(boxes) - inter)
  return jnp.where(disjoint, 0.0, iou)


# Candidates per step of `greedy_keep` off the CPU: a block is one loop step (a few
# matrix ops), so a GPU runs ~K/BLOCK steps instead of K.
BLOCK = 128


def default_block() -> int:
  """1 (one candidate per loop step) on the CPU, where that is fastest (2 ms against 7
  for 2000 proposals); BLOCK on accelerators, where each loop step costs kernel launches."""
  return 1 if jax.default_backend() == 'cpu' else BLOCK


def _more(steps, max_keep):
  """The while_loop condition of the greedy loops, whose state is (step, _, _, kept count):
  steps left and fewer than max_keep kept."""
  return lambda state: (state[0] < steps) & (state[3] < max_keep)


def greedy_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, eta: float = 1.0,
                block: int | None = None):
  """Greedy NMS over candidates already sorted by score (best first).

  A kept candidate suppresses later candidates of the same class whose IoU with it
  is not <= iou_threshold. At most `max_keep` are kept (the first ones). Returns keep
  [K] bool. eta < 1 is Paddle's adaptive NMS: after each kept box the threshold, while
  above 0.5, is multiplied by eta, and a candidate is checked against every kept box
  with the threshold of its own turn.

  eta = 1 runs block by block (`block` candidates a step, default `default_block()`;
  the result is the same for every block size): inside a block, keep =
  alive & ~(any kept earlier candidate of the block suppresses it) is solved by fixed-point
  iteration (its solution is unique: candidate i depends only on those before it); the
  block's kept candidates then suppress every later candidate at once.
  """
  if eta < 1.0:
    return _adaptive_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, eta)
  block = default_block() if block is None else block
  if block <= 1:
    return _sequential_keep(boxes, valid, classes, iou_threshold, legacy, max_keep)
  k = boxes.shape[0]
  block = min(block, k)
  nb = -(-k // block)
  pad = nb * block - k
  if pad:
    boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
    valid = jnp.pad(valid, (0, pad))
    classes = jnp.pad(classes, (0, pad))
  positions = jnp.arange(nb * block)
  local = jnp.arange(block)
  before = local[:, None] < local[None, :]  # [j, i]: j comes before i

  def suppresses(rows, rows_cls, cols, cols_cls):
    """[r, c]: row box r, if kept, suppresses column box c."""
    iou = jax.vmap(lambda b: _overlap_row(b, cols, legacy))(rows)
    return ~(iou <= iou_threshold) & (rows_cls[:, None] == cols_cls[None, :])

  def body(state):
    b, alive, keep, count = state
    start = b * block
    rows = lax.dynamic_slice_in_dim(boxes, start, block)
    rows_cls = lax.dynamic_slice_in_dim(classes, start, block)
    alive_b = lax.dynamic_slice_in_dim(alive, start, block)
    within = suppresses(rows, rows_cls, rows, rows_cls) & before

    def step(s):
      kept, _ = s
      new = alive_b & ~jnp.any(kept[:, None] & within, axis=0)
      return new, jnp.any(new != kept)

    kept, _ = lax.while_loop(lambda s: s[1], step, (alive_b, jnp.bool_(True)))
    later = positions[None, :] >= start + block
    hit = jnp.any(kept[:, None] & suppresses(rows, rows_cls, boxes, classes) & later, axis=0)
    keep = lax.dynamic_update_slice_in_dim(keep, kept, start, 0)
    return b + 1, alive & ~hit, keep, count + jnp.sum(kept, dtype=jnp.int32)

  init = (jnp.int32(0), valid, jnp.zeros((nb * block,), bool), jnp.int32(0))
  keep = lax.while_loop(_more(nb, max_keep), body, init)[2][:k]
  return keep & (jnp.cumsum(keep) <= max_keep)


def _sequential_keep(boxes, valid, classes, iou_threshold, legacy, max_keep):
  """`greedy_keep` one candidate per loop step."""
  k = boxes.shape[0]
  positions = jnp.arange(k)

  def body(state):
    i, alive, keep, count = state
    take = alive[i]
    iou = _overlap_row(boxes[i], boxes, legacy)
    suppress = (~(iou <= iou_threshold) & (classes == classes[i]) & (positions > i) & take)
    return i + 1, alive & ~suppress, keep.at[i].set(take), count + take.astype(jnp.int32)

  init = (jnp.int32(0), valid, jnp.zeros((k,), bool), jnp.int32(0))
  return lax.while_loop(_more(k, max_keep), body, init)[2]


def _adaptive_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, eta):
  k = boxes.shape[0]

  def body(state):
    i, thr, keep, count = state
    iou = _overlap_row(boxes[i], boxes, legacy)
    blocked = jnp.any(keep & (classes == classes[i]) & ~(iou <= thr))
    take = valid[i] & ~blocked
    thr = jnp.where(take & (thr > 0.5), thr * eta, thr)
    return i + 1, thr, keep.at[i].set(take), count + take.astype(jnp.int32)

  init = (jnp.int32(0), jnp.asarray(iou_threshold, boxes.dtype), jnp.zeros((k,), bool),
          jnp.int32(0))
  return lax.while_loop(_more(k, max_keep), body, init)[2]


def first_true(mask, n: int):
  """Positions of the first n True entries of mask [K] (padded), and their validity."""
  order = jnp.argsort(~mask, stable=True)[:n]
  picked = mask[order]
  if order.shape[0] < n:
    order = jnp.pad(order, (0, n - order.shape[0]))
    picked = jnp.pad(picked, (0, n - picked.shape[0]))
  return order, picked


def gather_valid(idx, ok, *arrays):
  """arrays[idx] (each [K, ...] -> [k, ...]) with the slots where ok [k] is False set to 0."""
  return tuple(jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a[idx], 0)
               for a in arrays)


def keep_detections(boxes, scores, classes, valid, iou_threshold, legacy, keep_top_k: int):
  """Class-aware greedy NMS (`greedy_keep`) over candidates sorted by score (best first),
  then the first keep_top_k kept: {'boxes' [k, 4], 'scores' [k], 'classes' [k],
  'valid' [k]}, invalid slots zero."""
  keep = greedy_keep(boxes, valid, classes, iou_threshold, legacy, keep_top_k)
  pos, ok = first_true(keep, keep_top_k)
  boxes, scores, classes = gather_valid(pos, ok, boxes, scores, classes)
  return {'boxes': boxes, 'scores': scores, 'classes': classes, 'valid': ok}


def nms(boxes, scores, iou_threshold: float, max_output: int,
        score_threshold: float = -jnp.inf, legacy: bool = False, eta: float = 1.0):
  """Single-class greedy NMS on boxes [M, 4] (xyxy) and scores [M].

  Boxes with score > score_threshold are visited by descending score (ties: lower
  index first); a box is dropped when its IoU with a kept box exceeds iou_threshold.
  legacy=True uses the +1 pixel width; eta < 1: adaptive NMS (`greedy_keep`).
  Returns (indices [max_output] int32,
  valid [max_output] bool), best first; invalid slots hold index 0.
  """
  order = jnp.argsort(-scores, stable=True)
  sorted_boxes = boxes[order]
  valid = scores[order] > score_threshold
  classes = jnp.zeros(scores.shape, jnp.int32)
  keep = greedy_keep(sorted_boxes, valid, classes, iou_threshold, legacy, max_output, eta)
  pos, ok = first_true(keep, max_output)
  idx = jnp.where(ok, order[pos], 0).astype(jnp.int32)
  return idx, ok


def _multiclass_nms_single(boxes, scores, score_threshold, nms_top_k, keep_top_k,
                           nms_threshold, normalized, background_label, max_candidates):
  m, c = scores.shape
  flat = scores.reshape(-1)  # index m * C + c
  if 0 <= background_label < c:
    flat = jnp.where(jnp.arange(m * c) % c == background_label, -jnp.inf, flat)
  p = min(max_candidates, m * c)
  cand_scores, cand_idx = lax.top_k(flat, p)  # equal scores: lower index first
  cand_cls = (cand_idx % c).astype(jnp.int32)
  if boxes.ndim == 3:  # one box per class: [M, C, 4], row m * C + c
    cand_box = boxes.reshape(-1, 4)[cand_idx]
  else:
    cand_box = boxes[cand_idx // c]
  valid = cand_scores > score_threshold
  if nms_top_k > -1:
    # Candidates are sorted by score, so the rank among earlier same-class
    # candidates is the rank within the class's above-threshold list.
    one_hot = (cand_cls[:, None] == jnp.arange(c)[None, :]).astype(jnp.int32)
    rank = jnp.take_along_axis(jnp.cumsum(one_hot, axis=0), cand_cls[:, None], axis=1)[:, 0] - 1
    valid = valid & (rank < nms_top_k)
  k = p if keep_top_k < 0 else keep_top_k
  return keep_detections(cand_box, cand_scores, cand_cls, valid, nms_threshold,
                         not normalized, k)


def multiclass_nms(boxes, scores, score_threshold: float, nms_top_k: int, keep_top_k: int,
                   nms_threshold: float, normalized: bool = True, background_label: int = -1,
                   max_candidates: int = 4096):
  """Paddle's multiclass_nms for boxes [N, M, 4] (shared by classes) or [N, M, C, 4] (one
  per class, as the R-CNN box head's class-specific regression), scores [N, M, C].

  Per class: scores > score_threshold, the best nms_top_k (-1: all), greedy NMS at
  nms_threshold (normalized=False: +1 pixel widths in the IoU); then the best
  keep_top_k (-1: all) over classes; class background_label is skipped.

  Static-shape version: the best `max_candidates` (box, class) pairs are taken first,
  then one class-aware greedy pass runs over them. It equals Paddle exactly whenever
  at most max_candidates pairs pass score_threshold (up to the order of exactly
  tied scores; Paddle's `eta` adaptive threshold is not supported).

  Returns {'boxes' [N, K, 4], 'scores' [N, K], 'classes' [N, K] int32,
  'valid' [N, K] bool}, K = keep_top_k (min(max_candidates, M * C) when -1), best first,
  invalid slots zero.
  """
  fn = lambda b, s: _multiclass_nms_single(
      b, s, score_threshold, nms_top_k, keep_top_k, nms_threshold, normalized,
      background_label, max_candidates)
  return jax.vmap(fn)(boxes, scores)
