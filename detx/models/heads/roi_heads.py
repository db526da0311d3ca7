"""R-CNN box heads, RoI sampling for a batch, Fast R-CNN losses and detection output
(PADDLEDET_SPEC §2.1-2.3, §2.5).

Heads (module names = Paddle prefixes, so detx.weights maps them to fc6_w, cls_score_b...):
- `TwoFCHead` (FPN): flatten the 7x7 RoI features, fc6 and fc7 (1024, ReLU, Paddle's
  Xavier with fan_out = fan_in), then cls_score (N(0, 0.01)) and bbox_pred (N(0, 0.001)).
  Names take a suffix (`fc6_2`, `cls_score_3`) for the cascade stages. Flax flattens
  NHWC; Paddle flattens CHW: load fc6 with `detx.weights.paddle.fc_from_chw(7, 7)`.
- `ResNetC5Head` (C4): res5 (`ResNetStage(5)`, Paddle's res5* names) on 14x14 RoI
  features -> 7x7x2048, global average pool, cls_score and bbox_pred (`box_outputs`).
  Its `res5` method is reused by the C4 mask branch.

Functions work on a batch of images with static slot counts and validity masks.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx import ops
from detx.models.backbones.resnet import ResNetStage
from detx.models.layers import Dense, Dtype
from detx.models.necks.fpn import paddle_xavier
from detx.ops.boxes import DEFAULT_SCALE_CLIP
from detx.ops.losses import smooth_l1

_normal = nn.initializers.normal


def box_outputs(x, num_classes: int, num_box_classes: int, suffix: str = '',
                dtype: Dtype = jnp.float32):
  """cls_score{suffix} (num_classes logits) and bbox_pred{suffix} (4 * num_box_classes);
  call inside a compact method (the layers become children of the caller)."""
  cls = Dense(num_classes, kernel_init=_normal(0.01), dtype=dtype,
                 name=f'cls_score{suffix}')(x)
  box = Dense(4 * num_box_classes, kernel_init=_normal(0.001), dtype=dtype,
                 name=f'bbox_pred{suffix}')(x)
  return cls.astype(jnp.float32), box.astype(jnp.float32)


class TwoFCHead(nn.Module):
  """The FPN box head: [R, h, w, C] RoI features -> (cls logits [R, K], deltas [R, 4 K'])."""
  num_classes: int
  num_box_classes: int
  hidden: int = 1024
  suffix: str = ''
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, roi_feats):
    s = self.suffix
    x = roi_feats.astype(self.dtype).reshape(roi_feats.shape[0], -1)
    x = nn.relu(Dense(self.hidden, kernel_init=paddle_xavier(x.shape[-1]), dtype=self.dtype,
                         name=f'fc6{s}')(x))
    x = nn.relu(Dense(self.hidden, kernel_init=paddle_xavier(x.shape[-1]), dtype=self.dtype,
                         name=f'fc7{s}')(x))
    return box_outputs(x, self.num_classes, self.num_box_classes, s, self.dtype)


class ResNetC5Head(nn.Module):
  """The C4 box head: res5 on [R, 14, 14, 1024] RoI features, average pool, outputs."""
  num_classes: int
  num_box_classes: int
  depth: int = 50
  variant: str = 'b'
  norm: str = 'affine'
  freeze_norm: bool = True
  dtype: Dtype = jnp.float32

  def setup(self):
    self.res5 = ResNetStage(5, self.depth, self.variant, norm=self.norm,
                            freeze_norm=self.freeze_norm, dtype=self.dtype)
    self.cls_score = Dense(self.num_classes, kernel_init=_normal(0.01), dtype=self.dtype)
    self.bbox_pred = Dense(4 * self.num_box_classes, kernel_init=_normal(0.001),
                              dtype=self.dtype)

  def features(self, roi_feats, train: bool = False):
    """[R, 14, 14, 1024] -> [R, 7, 7, 2048] (shared with the C4 mask branch). train:
    a trainable BatchNorm (norm 'bn', freeze_norm False) normalises over the RoIs and
    updates its running statistics; frozen norms (the zoo's) ignore it."""
    return self.res5(roi_feats.astype(self.dtype), train)

  def __call__(self, roi_feats, train: bool = False):
    feats = self.features(roi_feats, train)
    x = jnp.mean(feats.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    return (self.cls_score(x).astype(jnp.float32), self.bbox_pred(x).astype(jnp.float32),
            feats)


def sample_batch_rois(key, rois, rois_valid, batch, *,
                      batch_size_per_im: int = 512, fg_fraction: float = 0.25,
                      fg_thresh: float = 0.5, bg_thresh_hi: float = 0.5,
                      bg_thresh_lo: float = 0.0,
                      bbox_reg_weights: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
                      class_agnostic: bool = False, is_cascade: bool = False,
                      num_samples: int | None = None):
  """`ops.sample_rois` on each image (one PRNG key each); arrays [N, S, ...].

  GT classes are shifted by +1 (background first). Crowd GTs are left out of the
  ground truth altogether, as PaddleDetection's COCO reader does.
  """
  n = rois.shape[0]
  keys = jax.random.split(key, n) if key is not None else [None] * n
  gt_valid = batch['box_mask'] & ~batch['is_crowd']
  classes = batch['classes'].astype(jnp.int32) + 1

  def one(r, rv, gb, gc, gv, crowd, scale, k):
    return ops.sample_rois(r, rv, gb, gc, gv, crowd, k, batch_size_per_im, fg_fraction,
                           fg_thresh, bg_thresh_hi, bg_thresh_lo, bbox_reg_weights,
                           class_agnostic, is_cascade, scale, use_random=not is_cascade,
                           num_samples=num_samples)

  if key is None:
    return jax.vmap(lambda *a: one(*a, None))(rois, rois_valid, batch['boxes'], classes,
                                              gt_valid, batch['is_crowd'], batch['scale'])
  return jax.vmap(one)(rois, rois_valid, batch['boxes'], classes, gt_valid,
                       batch['is_crowd'], batch['scale'], keys)


def fast_rcnn_losses(cls_logits, box_deltas, targets, num_box_classes: int, weight: float = 1.0):
  """Softmax CE mean over the sampled RoIs of the batch; smooth-L1 (sigma 1) over the
  class-expanded targets (Paddle's inside = outside weights), summed over coordinates
  and averaged over the same RoIs. cls_logits [N, S, C], box_deltas [N, S, 4 K]."""
  valid = targets['valid'].astype(jnp.float32)
  norm = jnp.maximum(jnp.sum(valid), 1.0)
  logp = jax.nn.log_softmax(cls_logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, targets['labels'][..., None], axis=-1)[..., 0]
  tgt, w = ops.expand_box_targets(targets['box_targets'], targets['box_class'], num_box_classes)
  box = jnp.sum(smooth_l1(w * (box_deltas - tgt), 1.0) * w, axis=-1)
  return (weight * jnp.sum(ce * valid) / norm, weight * jnp.sum(box * valid) / norm)


def decode_class_boxes(rois, deltas, variances, num_classes: int, class_agnostic: bool,
                       clip=None, pixel_offset: bool = True):
  """Per-class boxes [..., C, 4] from rois [..., 4] and deltas [..., 4 K].

  Class-agnostic heads (K = 2) use the foreground slot for every class. Paddle's
  box_coder decode_center_size (BBoxHead / CascadeBBoxHead.get_prediction) does not
  clamp dw, dh, so neither does this by default (`clip`: an upper bound, as
  generate_proposals' log(1000 / 16)). pixel_offset=False is PaddleDetection 2.x's
  delta2bbox: widths without the +1 pixel (with its clip, log(1000 / 16)).
  """
  d = deltas.reshape(deltas.shape[:-1] + (-1, 4))
  if class_agnostic:
    d = jnp.broadcast_to(d[..., 1:2, :], d.shape[:-2] + (num_classes, 4))
  return ops.decode_boxes(rois[..., None, :], d, variances, legacy=pixel_offset, clip=clip)


def detect(probs, deltas, rois, rois_valid, scale, clip_hw, variances, *, class_agnostic: bool,
           score_threshold: float = 0.05, keep_top_k: int = 100, nms_threshold: float = 0.5,
           max_candidates: int = -1, pixel_offset: bool = True):
  """PaddleDetection's BBoxHead.get_prediction + multiclass_nms, batched.

  probs [N, R, C] softmax (background first), deltas [N, R, 4 K], rois [N, R, 4] in
  input pixels. Boxes are decoded per class from rois / scale, clipped to
  [0, w - 1] x [0, h - 1] with clip_hw [N, 2] = (h, w) the size Paddle's box_clip
  reads: the original image for Faster / Mask R-CNN (bbox_head.py passes im_shape),
  `ops.box_clip_size(im_info)` for Cascade (cascade_head.py passes the padded
  im_info); NMS with background 0, per class over every pair above score_threshold
  (max_candidates -1, Paddle's nms_top_k -1; N > 0 caps the pairs at the best N over
  all classes first). Returns the detection dict with classes 0..C-2 (background
  removed) and boxes in original pixels. pixel_offset=False: PaddleDetection 2.x's box
  arithmetic (decode_class_boxes; clipped to [0, w] x [0, h]).
  """
  num_classes = probs.shape[-1]
  r = rois / scale[:, None, None]
  boxes = decode_class_boxes(r, deltas, variances, num_classes, class_agnostic,  # [N,R,C,4]
                             None if pixel_offset else DEFAULT_SCALE_CLIP, pixel_offset)
  boxes = ops.clip_boxes(boxes, clip_hw.astype(jnp.float32)[:, None, None, :],
                         legacy=pixel_offset)
  probs = jnp.where(rois_valid[..., None], probs, 0.0)
  dets = ops.multiclass_nms(boxes, probs, score_threshold, -1, keep_top_k, nms_threshold,
                            normalized=False, background_label=0,
                            max_candidates=max_candidates)
  dets['classes'] = jnp.where(dets['valid'], dets['classes'] - 1, 0)
  return dets
