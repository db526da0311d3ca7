"""YOLOv3 box decoding and loss for one output level, with Paddle's semantics.

Head outputs are NHWC [N, H, W, A * (5 + C)]; for anchor a the channels
a * (5 + C) + [tx, ty, tw, th, obj, cls_0 .. cls_{C-1}] follow Paddle's NCHW head,
so converted weights map directly.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from detx.ops.losses import sigmoid_bce


def _split_anchors(anchors) -> np.ndarray:
  return np.asarray(anchors, np.float64).reshape(-1, 2)


def yolo_box(x, img_size, anchors, class_num: int, conf_thresh: float,
             downsample_ratio: int, clip_bbox: bool = True, scale_x_y: float = 1.0):
  """Decodes one YOLOv3 level, as paddle.vision.ops.yolo_box.

  x: [N, H, W, A * (5 + C)]; img_size: int [N, 2] = (h, w) of the original image;
  anchors: A (w, h) pairs (or a flat list) in network-input pixels.
  Returns boxes [N, A * H * W, 4] (x1, y1, x2, y2 in original-image pixels) and
  scores [N, A * H * W, C] = sigmoid(obj) * sigmoid(cls). Axis 1 is ordered
  (anchor, row, column), Paddle's order. Where sigmoid(obj) < conf_thresh both the
  box and the scores are 0. clip_bbox clamps x1, y1 at 0 and x2, y2 at W - 1, H - 1
  (one-sided, like Paddle).
  """
  anchors = _split_anchors(anchors)
  n, h, w, ch = x.shape
  a = anchors.shape[0]
  if ch != a * (5 + class_num):
    raise ValueError(f'expected {a * (5 + class_num)} channels, got {ch}')
  dtype = x.dtype
  x = jnp.transpose(x.reshape(n, h, w, a, 5 + class_num), (0, 3, 1, 2, 4))  # [N, A, H, W, 5+C]
  img_size = jnp.asarray(img_size)
  img_h = img_size[:, 0].astype(dtype)[:, None, None, None]
  img_w = img_size[:, 1].astype(dtype)[:, None, None, None]
  bias = -0.5 * (scale_x_y - 1.0)
  col = jnp.arange(w, dtype=dtype)[None, None, None, :]
  row = jnp.arange(h, dtype=dtype)[None, None, :, None]
  anc_w = jnp.asarray(anchors[:, 0], dtype)[None, :, None, None]
  anc_h = jnp.asarray(anchors[:, 1], dtype)[None, :, None, None]

  cx = (col + jax.nn.sigmoid(x[..., 0]) * scale_x_y + bias) * img_w / w
  cy = (row + jax.nn.sigmoid(x[..., 1]) * scale_x_y + bias) * img_h / h
  bw = jnp.exp(x[..., 2]) * anc_w * img_w / (downsample_ratio * w)
  bh = jnp.exp(x[..., 3]) * anc_h * img_h / (downsample_ratio * h)
  x1, y1 = cx - bw / 2, cy - bh / 2
  x2, y2 = cx + bw / 2, cy + bh / 2
  if clip_bbox:
    x1 = jnp.where(x1 > 0, x1, 0.0)
    y1 = jnp.where(y1 > 0, y1, 0.0)
    x2 = jnp.where(x2 < img_w - 1, x2, img_w - 1)
    y2 = jnp.where(y2 < img_h - 1, y2, img_h - 1)
  conf = jax.nn.sigmoid(x[..., 4])
  keep = ~(conf < conf_thresh)
  boxes = jnp.where(keep[..., None], jnp.stack([x1, y1, x2, y2], axis=-1), 0.0)
  scores = jnp.where(keep[..., None], conf[..., None] * jax.nn.sigmoid(x[..., 5:]), 0.0)
  return boxes.reshape(n, a * h * w, 4), scores.reshape(n, a * h * w, class_num)


def _centre_iou(x1, y1, w1, h1, x2, y2, w2, h2):
  """IoU of centre-size boxes, as Paddle's yolo_loss `CalcBoxIoU`."""
  ow = jnp.minimum(x1 + w1 / 2, x2 + w2 / 2) - jnp.maximum(x1 - w1 / 2, x2 - w2 / 2)
  oh = jnp.minimum(y1 + h1 / 2, y2 + h2 / 2) - jnp.maximum(y1 - h1 / 2, y2 - h2 / 2)
  inter = jnp.where((ow < 0) | (oh < 0), 0.0, ow * oh)
  return inter / (w1 * h1 + w2 * h2 - inter)


def yolo_loss(x, gt_box, gt_label, gt_score, anchors: Sequence[float],
              anchor_mask: Sequence[int], class_num: int, ignore_thresh: float,
              downsample_ratio: int, use_label_smooth: bool = True, scale_x_y: float = 1.0):
  """YOLOv3 loss of one level per image [N], as paddle.vision.ops.yolo_loss.

  x: [N, H, W, len(anchor_mask) * (5 + C)]; gt_box: [N, B, 4] normalised
  (cx, cy, w, h); gt_label: int [N, B]; gt_score: [N, B] (mixup weight) or None
  for ones. Boxes with w or h below 1e-6 are padding. anchors: all anchors, flat
  [w0, h0, w1, h1, ...] in network-input pixels (input size = H * downsample_ratio);
  anchor_mask: this level's anchor indices.

  Each valid GT goes to its best anchor over all anchors by shape IoU; if that
  anchor is in this level it gets, at the cell holding its centre, sigmoid CE on
  x, y and L1 on log-scale w, h (weighted (2 - w * h) * score) and per-class sigmoid
  CE (weighted score; label smoothing pos = 1 - s, neg = s, s = min(1/C, 1/40)).
  Objectness: sigmoid CE, positives weighted by score (the last GT written to a
  cell wins), negatives weight 1, predictions whose best IoU with a GT exceeds
  ignore_thresh skipped unless positive. Sums, no normalisation.
  For non-square maps x is normalised by W and y by H (Paddle uses H for both).
  """
  all_anchors = _split_anchors(anchors)
  mask = np.asarray(anchor_mask, np.int32)
  n, h, w, ch = x.shape
  a = mask.shape[0]
  if ch != a * (5 + class_num):
    raise ValueError(f'expected {a * (5 + class_num)} channels, got {ch}')
  dtype = x.dtype
  b = gt_box.shape[1]
  x = x.reshape(n, h, w, a, 5 + class_num)
  input_h, input_w = downsample_ratio * h, downsample_ratio * w
  gt_box = gt_box.astype(dtype)
  score = jnp.ones((n, b), dtype) if gt_score is None else gt_score.astype(dtype)
  gx, gy, gw, gh = (gt_box[..., i] for i in range(4))
  valid = ~((gw < 1e-6) | (gh < 1e-6))
  gw = jnp.where(valid, gw, 1.0)  # keeps log() finite for padding boxes
  gh = jnp.where(valid, gh, 1.0)

  # Ignore mask: predictions overlapping some GT by more than ignore_thresh.
  bias = -0.5 * (scale_x_y - 1.0)
  xs = jax.lax.stop_gradient(x)
  col = jnp.arange(w, dtype=dtype)[None, None, :, None]
  row = jnp.arange(h, dtype=dtype)[None, :, None, None]
  level_w = jnp.asarray(all_anchors[mask, 0], dtype)
  level_h = jnp.asarray(all_anchors[mask, 1], dtype)
  px = (col + jax.nn.sigmoid(xs[..., 0]) * scale_x_y + bias) / w
  py = (row + jax.nn.sigmoid(xs[..., 1]) * scale_x_y + bias) / h
  pw = jnp.exp(xs[..., 2]) * level_w / input_w
  ph = jnp.exp(xs[..., 3]) * level_h / input_h
  g = lambda v: v[:, None, None, None, :]  # [N, B] -> [N, 1, 1, 1, B]
  iou = _centre_iou(px[..., None], py[..., None], pw[..., None], ph[..., None],
                    g(gx), g(gy), g(gw), g(gh))
  iou = jnp.where(g(valid) & ~jnp.isnan(iou), iou, 0.0)
  obj_mask = jnp.where(jnp.max(iou, axis=-1) > ignore_thresh, -1.0, 0.0).astype(dtype)

  # Assign each GT to its best anchor by shape.
  an_w = jnp.asarray(all_anchors[:, 0], dtype) / input_w
  an_h = jnp.asarray(all_anchors[:, 1], dtype) / input_h
  inter = jnp.minimum(an_w, gw[..., None]) * jnp.minimum(an_h, gh[..., None])
  shape_iou = inter / (an_w * an_h + gw[..., None] * gh[..., None] - inter)
  best_n = jnp.argmax(shape_iou, axis=-1)  # [N, B]
  in_level = best_n[..., None] == jnp.asarray(mask)
  a_idx = jnp.argmax(in_level, axis=-1)
  pos = valid & jnp.any(in_level, axis=-1)
  gi = jnp.clip(jnp.floor(gx * w), 0, w - 1).astype(jnp.int32)
  gj = jnp.clip(jnp.floor(gy * h), 0, h - 1).astype(jnp.int32)
  batch = jnp.broadcast_to(jnp.arange(n)[:, None], (n, b))
  pred = x[batch, gj, gi, a_idx]  # [N, B, 5 + C]

  tx = gx * w - gi
  ty = gy * h - gj
  tw = jnp.log(gw * input_w / jnp.asarray(all_anchors[:, 0], dtype)[best_n])
  th = jnp.log(gh * input_h / jnp.asarray(all_anchors[:, 1], dtype)[best_n])
  box_weight = (2.0 - gw * gh) * score
  box_loss = (sigmoid_bce(pred[..., 0], tx) + sigmoid_bce(pred[..., 1], ty) +
              jnp.abs(pred[..., 2] - tw) + jnp.abs(pred[..., 3] - th)) * box_weight
  if use_label_smooth:
    smooth = min(1.0 / class_num, 1.0 / 40)
    label_pos, label_neg = 1.0 - smooth, smooth
  else:
    label_pos, label_neg = 1.0, 0.0
  one_hot = gt_label[..., None] == jnp.arange(class_num)
  cls_target = jnp.where(one_hot, label_pos, label_neg).astype(dtype)
  cls_loss = jnp.sum(sigmoid_bce(pred[..., 5:], cls_target), axis=-1) * score
  gt_loss = jnp.sum(jnp.where(pos, box_loss + cls_loss, 0.0), axis=-1)

  # Positive cells take the score of the last GT assigned to them.
  gt_index = jnp.where(pos, jnp.arange(b, dtype=jnp.int32), -1)
  winner = jnp.full((n, h, w, a), -1, jnp.int32).at[batch, gj, gi, a_idx].max(gt_index)
  win_score = jnp.take_along_axis(score, jnp.maximum(winner, 0).reshape(n, -1), axis=1)
  obj_mask = jnp.where(winner >= 0, win_score.reshape(n, h, w, a), obj_mask)
  obj = x[..., 4]
  obj_loss = jnp.where(obj_mask > 1e-5, sigmoid_bce(obj, 1.0) * obj_mask,
                       jnp.where(obj_mask > -0.5, sigmoid_bce(obj, 0.0), 0.0))
  return gt_loss + jnp.sum(obj_loss, axis=(1, 2, 3))
