"""Region Proposal Network: the head, its anchors, losses and proposals (PADDLEDET_SPEC §2.1-2.3).

The head is PaddleDetection's RPNHead / FPNRPNHead: a 3x3 conv with ReLU, then 1x1 convs
to A objectness logits and 4A deltas, NHWC, so the channel order is Paddle's (anchor a,
delta 4a + k; see detx.ops.proposals) and Paddle's weights load unchanged. Module names
are Paddle's prefixes: `conv_rpn`, `rpn_cls_logits`, `rpn_bbox_pred`, with the `_fpn2`
suffix on FPN, where one set of weights is shared by every level.

The functions below take the head outputs of all levels:
- `level_anchors`: Paddle's anchor_generator per level (static, from feature shapes);
- `rpn_losses`: rpn_target_assign over the anchors of all levels together (256 per
  image, 50% fg), sigmoid CE averaged over the sampled anchors of the batch, smooth-L1
  (sigma 3) on the fg deltas summed and divided by the same count;
- `rpn_proposals`: generate_proposals (C4), or per-level generate_fpn_proposals and
  the batch-wide collect_fpn_proposals (FPN).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx import ops
from detx.models.layers import Conv, Dtype
from detx.ops.losses import sigmoid_bce, smooth_l1

_normal = nn.initializers.normal


class RPNHead(nn.Module):
  """conv_rpn{suffix} (3x3, ReLU) -> rpn_cls_logits{suffix} (A), rpn_bbox_pred{suffix} (4A).

  Called on a list of NHWC maps (one per level; the same weights for all), returns a
  list of (logits [N, H, W, A], deltas [N, H, W, 4A]) in float32.
  """
  num_anchors: int
  channels: int
  suffix: str = ''  # '_fpn2' for the FPN head
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array]):
    s = self.suffix
    kw = dict(kernel_init=_normal(0.01), bias_init=nn.initializers.zeros, dtype=self.dtype)
    conv = Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), name=f'conv_rpn{s}', **kw)
    cls = Conv(self.num_anchors, (1, 1), name=f'rpn_cls_logits{s}', **kw)
    box = Conv(4 * self.num_anchors, (1, 1), name=f'rpn_bbox_pred{s}', **kw)
    outs = []
    for f in feats:
      h = nn.relu(conv(f.astype(self.dtype)))
      outs.append((cls(h).astype(jnp.float32), box(h).astype(jnp.float32)))
    return outs


def level_anchors(feat_shapes: Sequence[Sequence[int]], sizes_per_level: Sequence[Sequence[float]],
                  aspect_ratios: Sequence[float], strides: Sequence[float]):
  """Paddle's anchor_generator on each level: a list of [H_l * W_l * A, 4] constants."""
  return [ops.anchor_generator(hw, sizes, aspect_ratios, stride)
          for hw, sizes, stride in zip(feat_shapes, sizes_per_level, strides)]


def _flatten_levels(outs):
  logits = jnp.concatenate([l.reshape(l.shape[0], -1) for l, _ in outs], axis=1)
  deltas = jnp.concatenate([d.reshape(d.shape[0], -1, 4) for _, d in outs], axis=1)
  return logits, deltas


def rpn_losses(outs, anchors: Sequence[jax.Array], gt_boxes, gt_valid, is_crowd, info, key,
               batch_size_per_im: int = 256, fg_fraction: float = 0.5,
               pos_thresh: float = 0.7, neg_thresh: float = 0.3,
               straddle_thresh: float = 0.0, sigma: float = 3.0):
  """RPN losses over all levels' anchors, as PaddleDetection's (FPN)RPNHead.get_loss.

  outs: the head's per-level (logits, deltas); anchors: per level; gt_* [N, G, ...]
  in input pixels; info [N, 3] (h, w, scale); key: PRNG key (one per image is split
  off). Returns {'loss_rpn_cls', 'loss_rpn_bbox'}.
  """
  logits, deltas = _flatten_levels(outs)
  all_anchors = jnp.concatenate(list(anchors), axis=0)
  n = logits.shape[0]
  keys = jax.random.split(key, n)

  def assign(gb, gv, crowd, inf, k):
    return ops.rpn_target_assign(all_anchors, gb, gv, crowd, inf, k, batch_size_per_im,
                                 fg_fraction, pos_thresh, neg_thresh, straddle_thresh)

  t = jax.vmap(assign)(gt_boxes, gt_valid, is_crowd, info, keys)
  labels = t['labels']
  sampled = (labels >= 0).astype(jnp.float32)
  norm = jnp.maximum(jnp.sum(sampled), 1.0)
  cls = sigmoid_bce(logits, (labels == 1).astype(jnp.float32))
  box = jnp.sum(smooth_l1(deltas - t['box_targets'], sigma), axis=-1) * t['box_weights']
  return {'loss_rpn_cls': jnp.sum(cls * sampled) / norm,
          'loss_rpn_bbox': jnp.sum(box) / norm}


def rpn_proposals(outs, anchors: Sequence[jax.Array], info, pre_nms_top_n: int,
                  post_nms_top_n: int, nms_thresh: float = 0.7, min_size: float = 0.0,
                  fpn_post_nms_top_n: int = 0, anchor_valid=None):
  """Proposals [N, K, 4] (input pixels), scores [N, K], valid [N, K]; no gradient.

  One level (C4): generate_proposals(pre, post). Several levels (FPN): pre/post per
  level, then the best `fpn_post_nms_top_n` over the whole batch (collect_fpn_proposals).
  anchor_valid: per level bool [N, H, W] or None; the anchors of False positions score
  -inf, so no proposal comes from them (detx.models.extent: Paddle's eval geometry).
  """
  probs = [jax.nn.sigmoid(jax.lax.stop_gradient(l)) for l, _ in outs]
  if anchor_valid is not None:
    probs = [jnp.where(v[..., None], p, -jnp.inf) for p, v in zip(probs, anchor_valid)]
  deltas = [jax.lax.stop_gradient(d) for _, d in outs]
  if len(outs) == 1:
    return ops.generate_proposals(probs[0], deltas[0], info, anchors[0],
                                  pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n,
                                  nms_thresh=nms_thresh, min_size=min_size)
  rois, scores, valid = ops.generate_fpn_proposals(
      probs, deltas, info, list(anchors), pre_nms_top_n=pre_nms_top_n,
      post_nms_top_n=post_nms_top_n, nms_thresh=nms_thresh, min_size=min_size)
  return ops.collect_fpn_proposals(rois, scores, valid, fpn_post_nms_top_n or post_nms_top_n)
