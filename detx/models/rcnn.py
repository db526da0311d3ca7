"""Faster R-CNN, Mask R-CNN and Cascade R-CNN on ResNet C4 or ResNet-FPN
(PADDLEDET_SPEC §2.1-2.5), as linen modules with the YOLOv3 calling convention:

  module.apply(variables, batch, train=True, rngs={'sample': key}) -> losses incl. 'loss'
  module.apply(variables, batch, train=False) -> {'boxes' [B, K, 4] original-image
      pixels (legacy xyxy), 'scores', 'classes' (0..C-1, no background), 'valid'}
      (+ 'masks' [B, K, M, M] probabilities of the predicted class for Mask R-CNN)

Batch fields (the R-CNN pipeline): image [B, Hb, Wb, 3] (padded bucket), image_hw [B, 2]
(resized, unpadded), scale [B], boxes [B, G, 4] (resized pixels), classes [B, G] (0..C-1),
is_crowd, box_mask [B, G], gt_masks [B, G, M, M] (Mask R-CNN), orig_size [B, 2].

Composition (module names are Paddle's prefixes; see `paddle_rules`):
  backbone  ResNet (b / vd, affine norm frozen, freeze_at 2): res4 (C4) or res2-5 (FPN)
  fpn       FPN levels 2-6 (P6 = subsampled P5, RPN only)
  rpn       RPNHead (`conv_rpn`, `rpn_cls_logits`, `rpn_bbox_pred`, `_fpn2` on FPN)
  bbox_head ResNetC5Head (C4: RoIAlign 14x14, sampling 0, res5, avg pool) or TwoFCHead
            (FPN: RoIAlign 7x7 per level, sampling 2, fc6/fc7); Cascade adds
            bbox_head_2 / bbox_head_3 (`fc6_2`, `cls_score_3`, ...)
  mask_head MaskHead: C4 on the box head's res5 output (14x14 masks), FPN on 14x14
            RoIAlign features with 4 convs (28x28 masks)

Static shapes throughout: proposals, sampled RoIs and detections are fixed slot counts
with validity masks; the RPN and RoI samplers draw from the 'sample' PRNG stream.

Departures from Paddle (all documented knobs): `rpn_collect_images` sets how many images
share one collect_fpn_proposals top-k (Paddle: the images of one GPU; we group the global
batch into such groups, and evaluation uses groups of 1, as Paddle's batch-1 eval);
`anchor_scale` multiplies the anchor sizes and the FPN canonical RoI size (1 at the zoo's
image sizes; build_model shrinks it with data.max_size, as YOLOv3 does its anchors).
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx import ops
from detx.models.backbones.resnet import ResNet, trainable_mask
from detx.models.heads import roi_heads
from detx.models.heads.mask_head import MaskHead, mask_loss, select_class
from detx.models.heads.rpn import (RPNHead, im_info, level_anchors, padded_hw, rpn_losses,
                                   rpn_proposals)
from detx.models.layers import Dtype
from detx.models.necks.fpn import FPN
from detx.ops.masks import mask_targets


def cascade_variances(reg_weight: float):
  """Cascade stage variance from its bbox_reg_weight w: [1/w, 1/w, 2/w, 2/w]."""
  return (1.0 / reg_weight, 1.0 / reg_weight, 2.0 / reg_weight, 2.0 / reg_weight)


def _grouped(fn, n: int, group: int, *trees):
  """fn on groups of gcd(N, group) consecutive images of pytrees of [N, ...] arrays."""
  g = math.gcd(n, max(group, 1))
  if g == n:
    return fn(*trees)
  split = jax.tree.map(lambda a: a.reshape((n // g, g) + a.shape[1:]), trees)
  out = jax.vmap(fn)(*split)
  return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)


class RCNN(nn.Module):
  """Shared body of the R-CNN family. Subclasses fix the arch (faster / mask / cascade)."""
  num_classes: int = 81  # with background (COCO: 80 + 1)
  fpn: bool = True
  # backbone
  depth: int = 50
  variant: str = 'b'
  norm: str = 'affine'
  freeze_norm: bool = True
  freeze_at: int = 2
  # anchors / RPN
  anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0)
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  anchor_scale: float = 1.0
  rpn_batch_size_per_im: int = 256
  rpn_fg_fraction: float = 0.5
  rpn_positive_overlap: float = 0.7
  rpn_negative_overlap: float = 0.3
  rpn_straddle_thresh: float = 0.0
  rpn_nms_thresh: float = 0.7
  rpn_min_size: float = 0.0
  train_pre_nms_top_n: int = 2000
  train_post_nms_top_n: int = 2000
  train_collect_top_n: int = 2000   # FPN only
  test_pre_nms_top_n: int = 1000
  test_post_nms_top_n: int = 1000
  test_collect_top_n: int = 1000    # FPN only
  rpn_collect_images: int = 2       # images per collect_fpn_proposals group in training
  eval_pad_stride: int = 32         # eval im_info = resized size padded to this (0: unpadded)
  # RoI sampling and box head
  roi_batch_size_per_im: int = 512
  roi_fg_fraction: float = 0.25
  roi_fg_thresh: float = 0.5
  roi_bg_thresh_hi: float = 0.5
  roi_bg_thresh_lo: float = 0.0
  bbox_reg_weights: Sequence[float] = (0.1, 0.1, 0.2, 0.2)
  roi_resolution: int = 7
  roi_sampling_ratio: int = 2
  box_hidden: int = 1024
  canonical_size: float = 224.0
  canonical_level: int = 4
  # test
  score_threshold: float = 0.05
  keep_top_k: int = 100
  nms_threshold: float = 0.5
  max_candidates: int = 4096
  dtype: Dtype = jnp.float32
  remat: bool = False  # recompute backbone stages in the backward pass

  HAS_MASKS = False
  TRAIN_KEYS = ('image', 'image_hw', 'scale', 'boxes', 'classes', 'is_crowd', 'box_mask')
  EVAL_KEYS = ('image', 'image_hw', 'scale', 'orig_size')

  # ----------------------------------------------------------------- building blocks
  def setup(self):
    levels = (2, 3, 4, 5) if self.fpn else (4,)
    self.backbone = ResNet(self.depth, self.variant, self.norm, self.freeze_norm,
                           self.freeze_at, levels, dtype=self.dtype, remat=self.remat)
    if self.fpn:
      self.neck = FPN(256, 2, 6, dtype=self.dtype)
      self.rpn = RPNHead(len(self.aspect_ratios), 256, '_fpn2', self.dtype)
    else:
      self.rpn = RPNHead(len(self.aspect_ratios) * len(self.anchor_sizes), 1024, '',
                         self.dtype)
    self.setup_heads()

  def setup_heads(self):
    self.bbox_head = self.make_box_head('', self.num_classes)

  def make_box_head(self, suffix: str, num_box_classes: int):
    if self.fpn:
      return roi_heads.TwoFCHead(self.num_classes, num_box_classes, self.box_hidden, suffix,
                                 self.dtype)
    return roi_heads.ResNetC5Head(self.num_classes, num_box_classes, self.depth, self.variant,
                                  self.norm, self.freeze_norm, self.dtype)

  def features(self, image, train: bool):
    feats = self.backbone(image.astype(self.dtype), train)
    if self.fpn:
      feats = self.neck(feats)
    return feats

  def rpn_layout(self, feats):
    """Per RPN level: (feature, anchor sizes, stride)."""
    s = self.anchor_scale
    if self.fpn:
      return [(feats[l], (self.anchor_sizes[0] * s * 2.0 ** (l - 2),), 2.0 ** l)
              for l in range(2, 7)]
    return [(feats[4], tuple(a * s for a in self.anchor_sizes), 16.0)]

  def pool(self, feats, rois, resolution: int, sampling_ratio: int | None = None):
    """RoIAlign of rois [N, K, 4] (input pixels) -> [N * K, r, r, C].

    Each image pools its own RoIs (vmapped): under a batch-sharded jit every device
    reads only its own feature maps, and the C4 'matmul' evaluation keeps its
    [K, r, W, C] intermediate per image.
    """
    n, k = rois.shape[:2]
    sr = self.roi_sampling_ratio if sampling_ratio is None else sampling_ratio
    zeros = jnp.zeros((k,), jnp.int32)
    if self.fpn:
      def one(fs, r):
        levels = ops.fpn_levels(r, 2, 5, self.canonical_level,
                                self.canonical_size * self.anchor_scale)
        return ops.multilevel_roi_align({l: f[None] for l, f in fs.items()}, r, zeros, levels,
                                        resolution, sr)
      out = jax.vmap(one)({l: feats[l] for l in range(2, 6)}, rois)
    else:
      out = jax.vmap(lambda f, r: ops.roi_align(f[None], r, zeros, resolution, 1.0 / 16, sr))(
          feats[4], rois)
    return out.reshape((n * k,) + out.shape[2:])

  def box_head(self, head, feats, rois, train: bool = False):
    """Pooled RoIs through a box head: (cls [N, K, C], deltas [N, K, 4K'], extra).
    train reaches the C4 head's res5 (its BatchNorm, when trainable)."""
    n, k = rois.shape[:2]
    pooled = self.pool(feats, rois, self.roi_resolution)
    out = head(pooled) if self.fpn else head(pooled, train)
    cls, box = out[0], out[1]
    extra = out[2] if len(out) > 2 else None
    return cls.reshape(n, k, -1), box.reshape(n, k, -1), extra

  def eval_box_head(self, head, feats, rois):
    """`box_head` for evaluation, without `extra`. C4 runs one image at a time (a scan):
    res5 on the 1000 proposals of a batch of 8 would hold ~20 GB of activations."""
    n, k = rois.shape[:2]
    if self.fpn or n == 1:
      return self.box_head(head, feats, rois)[:2]

    def one(h, carry, xs):
      f, r = xs
      return carry, h(self.pool({4: f[None]}, r[None], self.roi_resolution))[:2]

    scan = nn.scan(one, variable_broadcast=['params', 'batch_stats'],
                   split_rngs={'params': False}, length=n)
    _, (cls, box) = scan(head, None, (feats[4], rois))
    return cls.reshape(n, k, -1), box.reshape(n, k, -1)

  def sample(self, key, rois, valid, batch, **kw):
    kw.setdefault('batch_size_per_im', self.roi_batch_size_per_im)
    kw.setdefault('fg_fraction', self.roi_fg_fraction)
    kw.setdefault('fg_thresh', self.roi_fg_thresh)
    kw.setdefault('bg_thresh_hi', self.roi_bg_thresh_hi)
    kw.setdefault('bg_thresh_lo', self.roi_bg_thresh_lo)
    kw.setdefault('bbox_reg_weights', tuple(self.bbox_reg_weights))
    return roi_heads.sample_batch_rois(key, rois, valid, batch, **kw)

  def detect(self, probs, deltas, rois, valid, batch, variances, class_agnostic: bool):
    return roi_heads.detect(probs, deltas, rois, valid, batch['scale'], batch['orig_size'],
                            variances, class_agnostic=class_agnostic,
                            score_threshold=self.score_threshold, keep_top_k=self.keep_top_k,
                            nms_threshold=self.nms_threshold,
                            max_candidates=self.max_candidates)

  def init_heads(self, feats):
    """Touches every head with zero RoI features (see `init_params`)."""
    c = 256 if self.fpn else 1024
    r = self.roi_resolution
    out = self.bbox_head(jnp.zeros((1, r, r, c), self.dtype))
    return out, self.init_extra(out)

  def init_extra(self, box_out):
    return None

  def init_params(self, image):
    """Creates every parameter at a fraction of a full forward's cost (no proposals,
    sampling or NMS): `module.init(key, image, method=type(module).init_params)`."""
    feats = self.features(image, False)
    outs = self.rpn([f for f, _, _ in self.rpn_layout(feats)])
    return outs, self.init_heads(feats)

  # ----------------------------------------------------------------- the forward pass
  def __call__(self, batch, train: bool):
    batch = dict(batch)
    n, hb, wb = batch['image'].shape[:3]
    if 'image_hw' not in batch:  # e.g. the train loop's init batch: an unpadded image
      batch['image_hw'] = jnp.tile(jnp.array([[hb, wb]], jnp.int32), (n, 1))
    if 'scale' not in batch:
      batch['scale'] = jnp.ones((n,), jnp.float32)
    batch['scale'] = batch['scale'].astype(jnp.float32)
    feats = self.features(batch['image'], train)
    layout = self.rpn_layout(feats)
    outs = self.rpn([f for f, _, _ in layout])
    anchors = level_anchors([f.shape[1:3] for f, _, _ in layout], [a for _, a, _ in layout],
                            self.aspect_ratios, [st for _, _, st in layout])
    if train:
      return self.train_losses(feats, outs, anchors, batch)
    info = im_info(padded_hw(batch['image_hw'], self.eval_pad_stride, (hb, wb)), batch['scale'])
    rois, _, valid = _grouped(
        lambda o, i: rpn_proposals(o, anchors, i, self.test_pre_nms_top_n,
                                   self.test_post_nms_top_n, self.rpn_nms_thresh,
                                   self.rpn_min_size, self.test_collect_top_n),
        n, 1 if self.fpn else n, outs, info)
    return self.predict(feats, rois, valid, batch)

  def train_losses(self, feats, outs, anchors, batch):
    n = batch['image'].shape[0]
    info = im_info(batch['image_hw'], batch['scale'])
    k_rpn, k_roi = jax.random.split(self.make_rng('sample'))
    losses = rpn_losses(outs, anchors, batch['boxes'], batch['box_mask'], batch['is_crowd'],
                        info, k_rpn, self.rpn_batch_size_per_im, self.rpn_fg_fraction,
                        self.rpn_positive_overlap, self.rpn_negative_overlap,
                        self.rpn_straddle_thresh)
    rois, _, valid = _grouped(
        lambda o, i: rpn_proposals(o, anchors, i, self.train_pre_nms_top_n,
                                   self.train_post_nms_top_n, self.rpn_nms_thresh,
                                   self.rpn_min_size, self.train_collect_top_n),
        n, self.rpn_collect_images if self.fpn else n, outs, info)
    losses.update(self.roi_losses(feats, rois, valid, batch, k_roi))
    losses['loss'] = sum(losses.values())
    return losses

  def roi_losses(self, feats, rois, valid, batch, key):
    t = self.sample(key, rois, valid, batch)
    cls, box, extra = self.box_head(self.bbox_head, feats, t['rois'], train=True)
    loss_cls, loss_bbox = roi_heads.fast_rcnn_losses(cls, box, t, self.num_classes)
    losses = {'loss_cls': loss_cls, 'loss_bbox': loss_bbox}
    losses.update(self.extra_losses(feats, t, extra, batch))
    return losses

  def extra_losses(self, feats, targets, box_feats, batch):
    return {}

  def predict(self, feats, rois, valid, batch):
    cls, box = self.eval_box_head(self.bbox_head, feats, rois)
    probs = jax.nn.softmax(cls, axis=-1)
    dets = self.detect(probs, box, rois, valid, batch, tuple(self.bbox_reg_weights), False)
    return self.predict_masks(feats, dets, batch)

  def predict_masks(self, feats, dets, batch):
    return dets


class FasterRCNN(RCNN):
  """Faster R-CNN (C4 with fpn=False, FPN otherwise)."""


class MaskRCNN(RCNN):
  """Mask R-CNN: Faster R-CNN plus the mask branch (C4: res5 reuse, 14x14; FPN: 28x28)."""
  mask_resolution: int = 28        # output masks (C4: 14)
  mask_roi_resolution: int = 14    # FPN RoIAlign size for the mask head
  mask_num_convs: int = 4          # C4: 0
  mask_conv_dim: int = 256

  HAS_MASKS = True
  TRAIN_KEYS = RCNN.TRAIN_KEYS + ('gt_masks',)

  def setup_heads(self):
    super().setup_heads()
    self.mask_head = MaskHead(self.num_classes, self.mask_num_convs, self.mask_conv_dim,
                              self.dtype)

  def init_extra(self, box_out):
    if self.fpn:
      r = self.mask_roi_resolution
      return self.mask_head(jnp.zeros((1, r, r, 256), self.dtype))
    return self.mask_head(box_out[2])

  def extra_losses(self, feats, t, box_feats, batch):
    n, s = t['labels'].shape
    f = int(math.floor(self.roi_batch_size_per_im * self.roi_fg_fraction))  # fg slots first
    f = min(f, s)
    labels = t['labels'][:, :f]
    fg = (labels > 0) & t['valid'][:, :f]
    fg_rois = t['rois'][:, :f]
    targets = mask_targets(batch['gt_masks'], batch['boxes'], fg_rois, t['matched_gt'][:, :f],
                           self.mask_resolution)
    if self.fpn:
      x = self.pool_masks(feats, fg_rois)
    else:  # the box head's res5 output of the foreground RoIs
      x = box_feats.reshape((n, s) + box_feats.shape[1:])[:, :f].reshape(
          (n * f,) + box_feats.shape[1:])
    logits = self.mask_head(x)
    logits = logits.reshape((n, f) + logits.shape[1:])
    return {'loss_mask': mask_loss(logits, targets, labels, fg)}

  def pool_masks(self, feats, boxes):
    return self.pool(feats, boxes, self.mask_roi_resolution)

  def predict_masks(self, feats, dets, batch):
    n, k = dets['valid'].shape
    boxes = jax.lax.stop_gradient(dets['boxes']) * batch['scale'][:, None, None]
    if self.fpn:
      x = self.pool_masks(feats, boxes)
    else:
      x = self.bbox_head.features(self.pool(feats, boxes, self.roi_resolution))
    logits = self.mask_head(x)
    logits = logits.reshape((n, k) + logits.shape[1:])
    probs = jax.nn.sigmoid(select_class(logits, dets['classes'] + 1))
    dets = dict(dets)
    dets['masks'] = jnp.where(dets['valid'][..., None, None], probs, 0.0)
    return dets


class CascadeRCNN(RCNN):
  """Cascade R-CNN (FPN): 3 stages at IoU 0.5 / 0.6 / 0.7, class-agnostic regression."""
  cascade_fg_thresholds: Sequence[float] = (0.5, 0.6, 0.7)
  cascade_reg_weights: Sequence[float] = (10.0, 20.0, 30.0)
  cascade_loss_weights: Sequence[float] = (1.0, 0.5, 0.25)

  def setup_heads(self):
    if not self.fpn:
      raise ValueError('Cascade R-CNN is built on FPN (as in PaddleDetection)')
    self.bbox_head = self.make_box_head('', 2)
    self.bbox_head_2 = self.make_box_head('_2', 2)
    self.bbox_head_3 = self.make_box_head('_3', 2)

  def stage_heads(self):
    return (self.bbox_head, self.bbox_head_2, self.bbox_head_3)

  def init_heads(self, feats):
    x = jnp.zeros((1, self.roi_resolution, self.roi_resolution, 256), self.dtype)
    return [head(x) for head in self.stage_heads()]

  def refine(self, rois, deltas, stage: int):
    """Decode the foreground slot of class-agnostic deltas [N, K, 8] with the stage's
    variance (Paddle's box_coder; no clip to the image)."""
    d = deltas.reshape(deltas.shape[:-1] + (2, 4))[..., 1, :]
    var = cascade_variances(self.cascade_reg_weights[stage])
    return jax.lax.stop_gradient(ops.decode_boxes(rois, d, var, legacy=True))

  def roi_losses(self, feats, rois, valid, batch, key):
    losses = {}
    for i, head in enumerate(self.stage_heads()):
      thr = self.cascade_fg_thresholds[i]
      kw = dict(fg_thresh=thr, bg_thresh_hi=thr, class_agnostic=True,
                bbox_reg_weights=cascade_variances(self.cascade_reg_weights[i]))
      if i == 0:
        t = self.sample(key, rois, valid, batch, **kw)
      else:
        t = self.sample(None, rois, valid, batch, is_cascade=True, **kw)
      cls, box, _ = self.box_head(head, feats, t['rois'], train=True)
      w = self.cascade_loss_weights[i]
      losses[f'loss_cls_{i}'], losses[f'loss_bbox_{i}'] = roi_heads.fast_rcnn_losses(
          cls, box, t, 2, weight=w)
      if i < 2:
        rois, valid = self.refine(t['rois'], box, i), t['valid']
    return losses

  def predict(self, feats, rois, valid, batch):
    heads = self.stage_heads()
    for i in range(2):
      _, box, _ = self.box_head(heads[i], feats, rois)
      rois = self.refine(rois, box, i)
    n, k = rois.shape[:2]
    pooled = self.pool(feats, rois, self.roi_resolution)
    probs, box3 = 0.0, None
    for head in heads:  # every stage's classifier on the stage-3 RoI features
      cls, box = head(pooled)
      probs = probs + jax.nn.softmax(cls.reshape(n, k, -1), axis=-1) / 3.0
      box3 = box.reshape(n, k, -1)
    var = cascade_variances(self.cascade_reg_weights[2])
    return self.detect(probs, box3, rois, valid, batch, var, True)


# --------------------------------------------------------------------- optimizer rules
def _path_names(path):
  return [getattr(k, 'key', str(k)) for k in path]


def weight_decay_mask(params) -> Any:
  """Global L2 only on conv / fc kernels: Detectron-style biases and the (frozen)
  affine norms have no decay (norm_decay 0)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[-1] == 'kernel', params)


def make_lr_mult(freeze_at: int = 2, freeze_norm: bool = True,
                 stage_mult: dict | None = None):
  """Paddle's per-parameter learning rates as a function of the params tree:
  0 for the frozen backbone stages (<= freeze_at) and frozen norms (also res5 in the
  C4 head), 2 for biases outside the backbone (Detectron style), times the cascade
  stage multiplier of the top-level module (`stage_mult`, e.g. {'bbox_head_2': 2})."""
  stage_mult = dict(stage_mult or {})

  def fn(params):
    backbone = trainable_mask(params['backbone'], freeze_at, freeze_norm)

    def rule(path, _):
      names = _path_names(path)
      top = names[0]
      if top == 'backbone':
        return 1.0
      if freeze_norm and len(names) >= 2 and names[-2].startswith('bn') and \
          names[-1] in ('scale', 'bias'):
        return 0.0
      mult = stage_mult.get(top, 1.0)
      return mult * (2.0 if names[-1] == 'bias' else 1.0)

    out = jax.tree_util.tree_map_with_path(rule, params)
    out = dict(out)
    out['backbone'] = jax.tree.map(lambda t: 1.0 if t else 0.0, backbone)
    return out
  return fn


def paddle_rules(module: RCNN):
  """detx.weights.paddle name rules for an R-CNN (zoo checkpoints and ImageNet
  backbones): ResNet names, fc6 after a CHW flatten of the RoI features, Detectron heads."""
  from detx.weights import paddle as pw
  rules = []
  if module.fpn:
    r = module.roi_resolution
    rules.append(pw.Rule(r'(?P<p>fc6(?:_\d)?)/kernel', '{p}_w', layout=pw.fc_from_chw(r, r)))
  return tuple(rules) + pw.RESNET_RULES + pw.DETECTRON_RULES


# --------------------------------------------------------------------- from a config
ARCHS = {'faster_rcnn': FasterRCNN, 'mask_rcnn': MaskRCNN, 'cascade_rcnn': CascadeRCNN}


def auto_anchor_scale(config) -> float:
  """model.anchor_scale, or (when 0) data.max_size / data.long_side if that caps the
  zoo's images (objects shrink with the images, so do anchors), else 1."""
  m, d = config.model, config.data
  if m.get('anchor_scale', 0.0):
    return float(m.anchor_scale)
  long_side = d.get('long_side', 1333)
  if d.get('max_size', 0) and d.max_size < long_side:
    return d.max_size / long_side
  return 1.0


def build(config):
  """(module, ParamRules) for model.name in ARCHS."""
  from detx.models import ParamRules
  m = config.model
  b, rpn, roi, nms = m.backbone, m.rpn, m.roi, m.nms
  kw = dict(
      num_classes=m.num_classes + 1, fpn=m.fpn, depth=b.depth, variant=b.variant,
      norm=b.norm, freeze_norm=b.freeze_norm, freeze_at=b.freeze_at,
      anchor_sizes=tuple(m.anchor_sizes), aspect_ratios=tuple(m.aspect_ratios),
      anchor_scale=auto_anchor_scale(config),
      rpn_batch_size_per_im=rpn.batch_size_per_im, rpn_fg_fraction=rpn.fg_fraction,
      rpn_positive_overlap=rpn.positive_overlap, rpn_negative_overlap=rpn.negative_overlap,
      rpn_straddle_thresh=rpn.straddle_thresh, rpn_nms_thresh=rpn.nms_thresh,
      rpn_min_size=rpn.min_size,
      train_pre_nms_top_n=rpn.train_pre_nms_top_n, train_post_nms_top_n=rpn.train_post_nms_top_n,
      train_collect_top_n=rpn.train_collect_top_n,
      test_pre_nms_top_n=rpn.test_pre_nms_top_n, test_post_nms_top_n=rpn.test_post_nms_top_n,
      test_collect_top_n=rpn.test_collect_top_n, rpn_collect_images=rpn.collect_images,
      eval_pad_stride=rpn.eval_pad_stride,
      roi_batch_size_per_im=roi.batch_size_per_im, roi_fg_fraction=roi.fg_fraction,
      roi_fg_thresh=roi.fg_thresh, roi_bg_thresh_hi=roi.bg_thresh_hi,
      roi_bg_thresh_lo=roi.bg_thresh_lo, bbox_reg_weights=tuple(roi.bbox_reg_weights),
      roi_resolution=roi.resolution, roi_sampling_ratio=roi.sampling_ratio,
      box_hidden=roi.hidden, canonical_size=roi.canonical_size,
      canonical_level=roi.canonical_level,
      score_threshold=nms.score_threshold, keep_top_k=nms.keep_top_k,
      nms_threshold=nms.nms_threshold, max_candidates=nms.max_candidates,
      dtype=jnp.dtype(m.dtype), remat=bool(m.get('remat', False)))
  stage_mult = None
  if m.name == 'mask_rcnn':
    mk = m.mask
    kw.update(mask_resolution=mk.resolution, mask_roi_resolution=mk.roi_resolution,
              mask_num_convs=mk.num_convs, mask_conv_dim=mk.conv_dim)
  elif m.name == 'cascade_rcnn':
    c = m.cascade
    kw.update(cascade_fg_thresholds=tuple(c.fg_thresholds),
              cascade_reg_weights=tuple(c.reg_weights),
              cascade_loss_weights=tuple(c.loss_weights))
    stage_mult = {name: 1.0 / w for name, w in
                  zip(('bbox_head', 'bbox_head_2', 'bbox_head_3'), c.loss_weights)}
  module = ARCHS[m.name](**kw)
  return module, ParamRules(weight_decay_mask,
                            make_lr_mult(b.freeze_at, b.freeze_norm, stage_mult),
                            paddle_rules(module))
