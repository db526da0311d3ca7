"""RetinaNet head: the subnets, their anchors, losses and detections (PADDLEDET_SPEC §2.6).

The head is PaddleDetection's RetinaHead: a classification and a box tower of
`num_convs` 3x3 convs (256, ReLU, N(0, 0.01)), then 3x3 convs to A * C logits (bias
-log((1 - 0.01) / 0.01), the focal-loss prior) and 4 A deltas. One set of weights serves
every level; module names are Paddle's with the finest level's suffix:
`retnet_cls_conv_n{0..3}_fpn3`, `retnet_bbox_conv_n{0..3}_fpn3`, `retnet_cls_pred_fpn3`,
`retnet_bbox_pred_fpn3`. Outputs are NHWC, so channel a * C + c is Paddle's (its
transpose to NHWC and reshape to [N, H * W * A, C]) and Paddle's weights load unchanged.

The functions below take the head outputs of all levels:
- `level_anchors`: anchor_generator per level, sizes stride * base_scale * 2^(i / 3),
  ratios [1, 2, 0.5] (A = 9);
- `retina_losses`: retinanet_target_assign over the anchors of all levels, sigmoid focal
  loss and smooth-L1 (sigma 3.0151) summed and divided by the foreground count;
- `retina_detections`: sigmoid scores and retinanet_detection_output.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx import ops
from detx.models import extent
from detx.models.layers import Conv, Dtype
from detx.ops.losses import smooth_l1

_normal = nn.initializers.normal


class RetinaHead(nn.Module):
  """Called on a list of NHWC maps (levels 3..7; the same weights for all), returns a
  list of (logits [N, H, W, A * C], deltas [N, H, W, 4 A]) in float32. `cfg`: the
  `model.head` sub-config (num_convs, channels, prior_prob)."""
  num_classes: int  # foreground classes (sigmoid, no background logit)
  num_anchors: int
  cfg: Any
  suffix: str = '_fpn3'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array]):
    s, c = self.suffix, self.cfg
    kw = dict(kernel_size=(3, 3), padding=((1, 1), (1, 1)), kernel_init=_normal(0.01),
              dtype=self.dtype)
    zeros = nn.initializers.zeros
    towers = {
        kind: [Conv(c.channels, bias_init=zeros, name=f'retnet_{kind}_conv_n{i}{s}', **kw)
               for i in range(c.num_convs)]
        for kind in ('cls', 'bbox')}
    prior = -math.log((1.0 - c.prior_prob) / c.prior_prob)
    cls_pred = Conv(self.num_anchors * self.num_classes,
                       bias_init=nn.initializers.constant(prior), name=f'retnet_cls_pred{s}', **kw)
    box_pred = Conv(4 * self.num_anchors, bias_init=zeros, name=f'retnet_bbox_pred{s}', **kw)
    outs = []
    for f in feats:
      x = {}
      for kind, convs in towers.items():
        h = f.astype(self.dtype)
        for conv in convs:
          h = extent.mask(nn.relu(conv(h)))  # Paddle's eval geometry (extent.py)
        x[kind] = h
      outs.append((cls_pred(x['cls']).astype(jnp.float32),
                   box_pred(x['bbox']).astype(jnp.float32)))
    return outs


def level_anchors(feat_shapes: Sequence[Sequence[int]], strides: Sequence[float],
                  base_scale: float = 4.0, scales_per_octave: int = 3,
                  aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5), anchor_scale: float = 1.0):
  """RetinaNet anchors of each level: a list of [H_l * W_l * A, 4] constants, sizes
  retinanet_anchor_sizes(stride) times anchor_scale (1 at the zoo's image sizes)."""
  out = []
  for hw, stride in zip(feat_shapes, strides):
    sizes = [s * anchor_scale for s in
             ops.retinanet_anchor_sizes(stride, base_scale, scales_per_octave)]
    out.append(ops.anchor_generator(hw, sizes, aspect_ratios, stride))
  return out


def flatten_levels(outs, num_classes: int):
  """Per-level head outputs -> ([N, H_l * W_l * A, C] logits, [N, H_l * W_l * A, 4] deltas),
  row (h * W + w) * A + a: the order of `level_anchors` and of Paddle's reshape."""
  n = outs[0][0].shape[0]
  logits = [l.reshape(n, -1, num_classes) for l, _ in outs]
  deltas = [d.reshape(n, -1, 4) for _, d in outs]
  return logits, deltas


def retina_losses(outs, anchors: Sequence[jax.Array], gt_boxes, gt_labels, gt_valid, is_crowd,
                  num_classes: int, positive_overlap: float = 0.5, negative_overlap: float = 0.4,
                  gamma: float = 2.0, alpha: float = 0.25, sigma: float = 3.0151134457776365,
                  group_images: int = 2):
  """RetinaHead.get_loss over all levels' anchors.

  outs: the head's per-level (logits, deltas); anchors: per level; gt_boxes [N, G, 4]
  (input pixels), gt_labels [N, G] (1..C), gt_valid, is_crowd [N, G].

  Paddle normalises both losses by fg_num, the sum over the images of one GPU of each
  image's retinanet_target_assign ForegroundNumber (foreground candidates + 1), and
  averages the GPUs' gradients. Here consecutive groups of gcd(N, group_images) images
  (the zoo: 2 per GPU) play the GPUs: each group's summed focal and smooth-L1 losses are
  divided by its fg_num, then the groups are averaged.
  Returns {'loss_cls', 'loss_bbox'}.
  """
  logits, deltas = (jnp.concatenate(x, axis=1) for x in flatten_levels(outs, num_classes))
  all_anchors = jnp.concatenate(list(anchors), axis=0)
  n = logits.shape[0]

  def assign(gb, gl, gv, crowd):
    return ops.retinanet_target_assign(all_anchors, gb, gl, gv, crowd, positive_overlap,
                                       negative_overlap)

  t = jax.vmap(assign)(gt_boxes, gt_labels, gt_valid, is_crowd)
  groups = n // ops.group_size(n, group_images)
  fg_num = ops.grouped(lambda f: jnp.broadcast_to(jnp.sum(f), f.shape), n, group_images,
                       t['fg_num'])  # [N]: each image's group total
  focal = ops.sigmoid_focal_loss(logits, t['labels'], fg_num[:, None], gamma, alpha)
  box = jnp.sum(smooth_l1(deltas - t['box_targets'], sigma), axis=-1) * t['box_weights']
  box = box / jnp.maximum(fg_num, 1).astype(jnp.float32)[:, None]
  return {'loss_cls': jnp.sum(focal) / groups, 'loss_bbox': jnp.sum(box) / groups}


def retina_detections(outs, anchors: Sequence[jax.Array], info, num_classes: int,
                      score_threshold: float = 0.05, pre_nms_top_n: int = 1000,
                      nms_threshold: float = 0.5, keep_top_k: int = 100):
  """RetinaHead.get_prediction: sigmoid scores per level, then
  ops.retinanet_detection_output with im_info `info` [N, 3]; no gradient."""
  logits, deltas = flatten_levels(jax.lax.stop_gradient(outs), num_classes)
  scores = [jax.nn.sigmoid(l) for l in logits]
  return ops.retinanet_detection_output(scores, deltas, list(anchors), info, score_threshold,
                                        pre_nms_top_n, keep_top_k, nms_threshold)
