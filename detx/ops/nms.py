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
                block: int | None = None, num_valid=None):
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

  num_valid (optional, may be traced): every valid candidate is among the first
  num_valid (score-sorted candidates over a threshold); the loop stops after them.
  """
  if eta < 1.0:
    return _adaptive_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, eta)
  block = default_block() if block is None else block
  if block <= 1:
    return _sequential_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, num_valid)
  k = boxes.shape[0]
  block = min(block, k)
  nb = -(-k // block)
  steps = nb if num_valid is None else (num_valid + block - 1) // block
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
  keep = lax.while_loop(_more(steps, max_keep), body, init)[2][:k]
  return keep & (jnp.cumsum(keep) <= max_keep)


def _sequential_keep(boxes, valid, classes, iou_threshold, legacy, max_keep, num_valid=None):
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
  return lax.while_loop(_more(k if num_valid is None else num_valid, max_keep), body, init)[2]


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


def _multiclass_nms_per_class(boxes, scores, score_threshold, nms_top_k, keep_top_k,
                              nms_threshold, normalized, background_label):
  """Paddle's MultiClassNMS as its kernel runs it (no cap across classes): per class, the
  scores over score_threshold, the best nms_top_k (-1: all M) of them, greedy NMS; then
  the best keep_top_k over every class's kept boxes. Classes run side by side (vmap);
  each class stops after its candidates over the threshold, or once it has kept
  keep_top_k (no class contributes more to the final keep_top_k)."""
  m, c = scores.shape
  labels = jnp.asarray([k for k in range(c) if k != background_label], jnp.int32)
  k = m if nms_top_k < 0 else min(nms_top_k, m)
  top_scores, top_idx = lax.top_k(scores.T[labels], k)  # [C', k]; ties: lower index first
  if boxes.ndim == 3:  # one box per class: [M, C, 4]
    cand_box = boxes[top_idx, labels[:, None]]
  else:
    cand_box = boxes[top_idx]
  valid = top_scores > score_threshold  # a prefix of each class's row
  per_class_keep = k if keep_top_k < 0 else min(keep_top_k, k)
  zeros = jnp.zeros((k,), jnp.int32)
  keep = jax.vmap(lambda b, v: greedy_keep(b, v, zeros, nms_threshold, not normalized,
                                           per_class_keep, num_valid=jnp.sum(v)))(
      cand_box, valid)
  out = labels.shape[0] * k if keep_top_k < 0 else keep_top_k
  flat_keep = keep.reshape(-1)
  ranked = jnp.where(flat_keep, top_scores.reshape(-1), -jnp.inf)
  _, pos = lax.top_k(ranked, min(out, flat_keep.shape[0]))  # ties: lower class first
  ok = flat_keep[pos]
  classes = jnp.broadcast_to(labels[:, None], keep.shape).reshape(-1)
  boxes_o, scores_o, classes_o = gather_valid(pos, ok, cand_box.reshape(-1, 4),
                                              top_scores.reshape(-1), classes)
  if pos.shape[0] < out:
    pad = out - pos.shape[0]
    boxes_o, scores_o, classes_o, ok = (jnp.pad(boxes_o, ((0, pad), (0, 0))),
                                        jnp.pad(scores_o, (0, pad)),
                                        jnp.pad(classes_o, (0, pad)), jnp.pad(ok, (0, pad)))
  return {'boxes': boxes_o, 'scores': scores_o, 'classes': classes_o, 'valid': ok}


def _multiclass_nms_single(boxes, scores, score_threshold, nms_top_k, keep_top_k,
                           nms_threshold, normalized, background_label, max_candidates):
  if max_candidates < 0:
    return _multiclass_nms_per_class(boxes, scores, score_threshold, nms_top_k, keep_top_k,
                                     nms_threshold, normalized, background_label)
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

  max_candidates -1: Paddle's per-class kernel, no cap (each class's greedy NMS over
  its M candidates, the classes side by side). max_candidates > 0: the best
  `max_candidates` (box, class) pairs over all classes are taken first, then one
  class-aware greedy pass runs over them (less work when M * C is large); it equals
  Paddle exactly whenever at most max_candidates pairs pass score_threshold (and
  nms_top_k). Both: up to the order of exactly tied scores; Paddle's `eta` adaptive
  threshold is not supported.

  Returns {'boxes' [N, K, 4], 'scores' [N, K], 'classes' [N, K] int32,
  'valid' [N, K] bool}, K = keep_top_k (when -1: min(max_candidates, M * C), or
  C' * min(nms_top_k, M) for the C' non-background classes without a cap), best first,
  invalid slots zero.
  """
  fn = lambda b, s: _multiclass_nms_single(
      b, s, score_threshold, nms_top_k, keep_top_k, nms_threshold, normalized,
      background_label, max_candidates)
  return jax.vmap(fn)(boxes, scores)
