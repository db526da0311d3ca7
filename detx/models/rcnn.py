"""Faster R-CNN on ResNet C4 or ResNet-FPN (PADDLEDET_SPEC §2.1-2.3), the shared body
of the R-CNN family (Mask R-CNN: mask_rcnn.py; Cascade R-CNN: cascade_rcnn.py):

  module.apply(variables, batch, train=True, rngs={'sample': key}) -> losses incl. 'loss'
  module.apply(variables, batch, train=False) -> {'boxes' [B, K, 4] original-image
      pixels (legacy xyxy), 'scores', 'classes' (0..C-1, no background), 'valid'}

Batch fields (the R-CNN pipeline): image [B, Hb, Wb, 3] (padded bucket), image_hw [B, 2]
(resized, unpadded), scale [B], boxes [B, G, 4] (resized pixels), classes [B, G] (0..C-1),
is_crowd, box_mask [B, G], gt_masks [B, G, M, M] (Mask R-CNN), orig_size [B, 2].

The module takes the `model` sub-config whole (`cfg`): backbone, neck ('fpn' or 'none'
for C4), anchor (sizes, aspect_ratios), rpn, roi, nms (and mask / cascade).
Composition (module names are Paddle's prefixes; see `paddle_rules`):
  backbone  ResNet (b / vd, affine norm frozen, freeze_at 2): res4 (C4) or res2-5 (FPN)
  neck      FPN levels 2-6 (P6 = subsampled P5, RPN only)
  rpn       RPNHead (`conv_rpn`, `rpn_cls_logits`, `rpn_bbox_pred`, `_fpn2` on FPN)
  bbox_head ResNetC5Head (C4: RoIAlign 14x14, sampling 0, res5, avg pool) or TwoFCHead
            (FPN: RoIAlign 7x7 per level, sampling 2, fc6/fc7)

Static shapes throughout: proposals, sampled RoIs and detections are fixed slot counts
with validity masks; the RPN and RoI samplers draw from the 'sample' PRNG stream.

Departures from Paddle (documented knobs): `rpn.collect_images` sets how many images
share one collect_fpn_proposals top-k (Paddle: the images of one GPU; we group the global
batch into such groups, and evaluation uses groups of 1, as Paddle's batch-1 eval);
`anchor_scale` multiplies the anchor sizes and the FPN canonical RoI size (1 at the zoo's
image sizes; detx.models.base.anchor_scale shrinks it with data.max_size).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from detx import ops, optim
from detx.models import backbones, extent, inputs, necks
from detx.models.heads import roi_heads
from detx.models.heads.rpn import RPNHead, level_anchors, rpn_losses, rpn_proposals
from detx.models.layers import Dtype
from detx.ops.batching import grouped, im_info, padded_hw


class RCNN(nn.Module):
  """Shared body of the R-CNN family; FasterRCNN, MaskRCNN and CascadeRCNN fix the heads."""
  cfg: Any                  # the model sub-config (FrozenConfigDict)
  anchor_scale: float = 1.0
  dtype: Dtype = jnp.float32
  eval_geometry: str = 'paddle'  # eval.geometry: 'paddle' (detx.models.extent) or 'bucket'

  HAS_MASKS = False
  TRAIN_KEYS = ('image', 'image_hw', 'scale', 'boxes', 'classes', 'is_crowd', 'box_mask')
  EVAL_KEYS = ('image', 'image_hw', 'scale', 'orig_size')

  @property
  def fpn(self) -> bool:
    return self.cfg.neck.name == 'fpn'

  @property
  def num_classes(self) -> int:
    """With background (COCO: 80 + 1)."""
    return self.cfg.num_classes + 1

  # ----------------------------------------------------------------- building blocks
  def setup(self):
    c = self.cfg
    self.backbone = backbones.build(c.backbone, necks.input_levels(c.neck), self.dtype,
                                    c.remat)
    ratios = len(c.anchor.aspect_ratios)
    if self.fpn:
      self.neck = necks.build(c.neck, self.dtype)
      self.rpn = RPNHead(ratios, c.neck.channels, '_fpn2', self.dtype)
    else:
      self.rpn = RPNHead(ratios * len(c.anchor.sizes), 1024, '', self.dtype)
    self.setup_heads()

  def setup_heads(self):
    self.bbox_head = self.make_box_head('', self.num_classes)

  def make_box_head(self, suffix: str, num_box_classes: int):
    b = self.cfg.backbone
    if self.fpn:
      return roi_heads.TwoFCHead(self.num_classes, num_box_classes, self.cfg.roi.hidden,
                                 suffix, self.dtype)
    return roi_heads.ResNetC5Head(self.num_classes, num_box_classes, b.depth, b.variant,
                                  b.norm, b.freeze_norm, self.dtype)

  def features(self, image, train: bool):
    feats = self.backbone(image.astype(self.dtype), train)
    if self.fpn:
      feats = self.neck(feats)
    return feats

  def rpn_layout(self, feats):
    """Per RPN level: (feature, anchor sizes, stride)."""
    s, a = self.anchor_scale, self.cfg.anchor
    if self.fpn:
      n = self.cfg.neck
      return [(feats[l], (a.sizes[0] * s * 2.0 ** (l - n.min_level),), 2.0 ** l)
              for l in range(n.min_level, n.max_level + 1)]
    return [(feats[4], tuple(x * s for x in a.sizes), 16.0)]

  def pool(self, feats, rois, resolution: int, sampling_ratio: int | None = None):
    """RoIAlign of rois [N, K, 4] (input pixels) -> [N * K, r, r, C].

    Each image pools its own RoIs (vmapped): under a batch-sharded jit every device
    reads only its own feature maps, and the C4 'matmul' evaluation keeps its
    [K, r, W, C] intermediate per image.
    """
    r = self.cfg.roi
    n, k = rois.shape[:2]
    sr = r.sampling_ratio if sampling_ratio is None else sampling_ratio
    # PaddleDetection 2.x switches (docs/parity.md); the zoo's 1.x: False / True.
    aligned, pixel_offset = r.get('aligned', False), r.get('pixel_offset', True)
    zeros = jnp.zeros((k,), jnp.int32)
    # Paddle's eval geometry: each image's map size ([N, 2] per level), else None
    sizes = {l: extent.pool_hw(f.shape[1:3]) for l, f in feats.items()}
    one_image = lambda e: None if e is None else e[None]
    if self.fpn:
      def one(fs, x, es):
        levels = ops.fpn_levels(x, 2, 5, r.canonical_level, r.canonical_size * self.anchor_scale,
                                legacy=pixel_offset)
        return ops.multilevel_roi_align({l: f[None] for l, f in fs.items()}, x, zeros, levels,
                                        resolution, sr, aligned=aligned,
                                        valid_hw=None if es[2] is None else
                                        [one_image(es[l]) for l in range(2, 6)])
      out = jax.vmap(one)({l: feats[l] for l in range(2, 6)}, rois,
                          {l: sizes[l] for l in range(2, 6)})
    else:
      out = jax.vmap(lambda f, x, e: ops.roi_align(f[None], x, zeros, resolution, 1.0 / 16, sr,
                                                   aligned=aligned, valid_hw=one_image(e)))(
          feats[4], rois, sizes[4])
    return out.reshape((n * k,) + out.shape[2:])

  def box_head(self, head, feats, rois, train: bool = False):
    """Pooled RoIs through a box head: (cls [N, K, C], deltas [N, K, 4K'], extra).
    train reaches the C4 head's res5 (its BatchNorm, when trainable)."""
    n, k = rois.shape[:2]
    pooled = self.pool(feats, rois, self.cfg.roi.resolution)
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

    state = extent.pooling_state()  # Paddle's eval geometry: one image's extent at a time
    bucket = state[1] if state else ()

    def one(h, carry, xs):
      f, r, e = xs
      with extent.pooling(None if e is None else e[None], bucket, e is not None):
        return carry, h(self.pool({4: f[None]}, r[None], self.cfg.roi.resolution))[:2]

    scan = nn.scan(one, variable_broadcast=['params', 'batch_stats'],
                   split_rngs={'params': False}, length=n)
    _, (cls, box) = scan(head, None, (feats[4], rois, state[0] if state else None))
    return cls.reshape(n, k, -1), box.reshape(n, k, -1)

  def sample(self, key, rois, valid, batch, **kw):
    """RoI sampling with the `roi` sub-config's numbers (kw overrides them: cascade)."""
    r = self.cfg.roi
    kw = dict(dict(batch_size_per_im=r.batch_size_per_im, fg_fraction=r.fg_fraction,
                   fg_thresh=r.fg_thresh, bg_thresh_hi=r.bg_thresh_hi,
                   bg_thresh_lo=r.bg_thresh_lo, bbox_reg_weights=tuple(r.bbox_reg_weights)),
              **kw)
    return roi_heads.sample_batch_rois(key, rois, valid, batch, **kw)

  def detect(self, probs, deltas, rois, valid, batch, variances, class_agnostic: bool,
             clip_hw=None):
    """roi_heads.detect; boxes clipped to clip_hw [N, 2], by default the original image
    (Paddle's BBoxHead: box_clip with im_shape)."""
    m = self.cfg.nms
    clip_hw = batch['orig_size'] if clip_hw is None else clip_hw
    return roi_heads.detect(probs, deltas, rois, valid, batch['scale'], clip_hw,
                            variances, class_agnostic=class_agnostic,
                            score_threshold=m.score_threshold, keep_top_k=m.keep_top_k,
                            nms_threshold=m.nms_threshold, max_candidates=m.max_candidates,
                            pixel_offset=self.cfg.roi.get('pixel_offset', True))

  def init_heads(self, feats):
    """Touches every head with zero RoI features (see `init_params`)."""
    c = self.cfg.neck.channels if self.fpn else 1024
    r = self.cfg.roi.resolution
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
  def proposals(self, outs, anchors, info, n: int, train: bool, anchor_valid=None):
    p = self.cfg.rpn
    mode = 'train' if train else 'test'
    group = (p.collect_images if train else 1) if self.fpn else n
    return grouped(
        lambda o, i, v: rpn_proposals(o, anchors, i, p[f'{mode}_pre_nms_top_n'],
                                      p[f'{mode}_post_nms_top_n'], p.nms_thresh, p.min_size,
                                      p[f'{mode}_collect_top_n'], v),
        n, group, outs, info, anchor_valid)

  def __call__(self, batch, train: bool):
    batch = dict(batch)
    n, hb, wb = batch['image'].shape[:3]
    if 'image_hw' not in batch:  # e.g. the train loop's init batch: an unpadded image
      batch['image_hw'] = jnp.tile(jnp.array([[hb, wb]], jnp.int32), (n, 1))
    if 'scale' not in batch:
      batch['scale'] = jnp.ones((n,), jnp.float32)
    batch['scale'] = batch['scale'].astype(jnp.float32)
    batch['image'] = inputs.batch_image(batch)  # uint8 batches: normalised here
    # Paddle's eval input extent: C4 the image, FPN the image padded to 32 (eval_pad_stride)
    hw = padded_hw(batch['image_hw'], self.cfg.rpn.eval_pad_stride, (hb, wb))
    with extent.scope(hw, (hb, wb), not train and self.eval_geometry == 'paddle') as masked:
      feats = self.features(batch['image'], train)
      layout = self.rpn_layout(feats)
      outs = self.rpn([f for f, _, _ in layout])
      anchor_valid = [extent.valid(f.shape[1:3]) for f, _, _ in layout] if masked else None
    anchors = level_anchors([f.shape[1:3] for f, _, _ in layout], [a for _, a, _ in layout],
                            self.cfg.anchor.aspect_ratios, [st for _, _, st in layout])
    if train:
      return self.train_losses(feats, outs, anchors, batch)
    info = im_info(hw, batch['scale'])
    batch['im_info'] = info  # Cascade's box_clip reads it
    rois, _, valid = self.proposals(outs, anchors, info, n, False, anchor_valid)
    with extent.pooling(hw, (hb, wb), masked):  # RoIAlign sees each image's map
      return self.predict(feats, rois, valid, batch)

  def train_losses(self, feats, outs, anchors, batch):
    p = self.cfg.rpn
    info = im_info(batch['image_hw'], batch['scale'])
    k_rpn, k_roi = jax.random.split(self.make_rng('sample'))
    losses = rpn_losses(outs, anchors, batch['boxes'], batch['box_mask'], batch['is_crowd'],
                        info, k_rpn, p.batch_size_per_im, p.fg_fraction, p.positive_overlap,
                        p.negative_overlap, p.straddle_thresh)
    rois, _, valid = self.proposals(outs, anchors, info, batch['image'].shape[0], True)
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
    dets = self.detect(probs, box, rois, valid, batch, tuple(self.cfg.roi.bbox_reg_weights),
                       False)
    return self.predict_masks(feats, dets, batch)

  def predict_masks(self, feats, dets, batch):
    return dets


class FasterRCNN(RCNN):
  """Faster R-CNN (C4 with neck 'none', FPN otherwise)."""


# --------------------------------------------------------------------- from a config
def build(config) -> RCNN:
  """The module of model.name (faster_rcnn, mask_rcnn, cascade_rcnn)."""
  from detx.models.base import anchor_scale, family
  return family(config).module(ml_collections.FrozenConfigDict(config.model),
                               anchor_scale(config), jnp.dtype(config.model.dtype),
                               extent.geometry(config))


def paddle_rules(module: RCNN):
  """detx.weights.paddle name rules for an R-CNN (zoo checkpoints and ImageNet
  backbones): ResNet names, fc6 after a CHW flatten of the RoI features, Detectron heads."""
  from detx.weights import paddle as pw
  rules = []
  if module.fpn:
    r = module.cfg.roi.resolution
    rules.append(pw.Rule(r'(?P<p>fc6(?:_\d)?)/kernel', '{p}_w', layout=pw.fc_from_chw(r, r)))
  return tuple(rules) + pw.RESNET_RULES + pw.DETECTRON_RULES


def param_rules(config, module: RCNN, stage_mult: dict | None = None) -> optim.ParamRules:
  """Detectron's rules as Paddle set them: L2 on kernels, biases outside the backbone at
  lr x2, frozen backbone stages and norms at 0 (`stage_mult`: Cascade's per-stage lr, for
  the stage's weights and biases alike)."""
  b = config.model.backbone
  return optim.ParamRules(
      optim.kernel_decay_mask,
      optim.lr_multipliers(backbones.trainable(b), 2.0, b.freeze_norm, stage_mult),
      paddle_rules(module))
