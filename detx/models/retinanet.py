"""RetinaNet on ResNet-FPN (PADDLEDET_SPEC §2.6), with the R-CNN calling convention:

  module.apply(variables, batch, train=True) -> {'loss_cls', 'loss_bbox', 'loss'}
  module.apply(variables, batch, train=False) -> {'boxes' [B, K, 4] original-image
      pixels (legacy xyxy), 'scores', 'classes' (0..C-1), 'valid'}

Batch fields (the R-CNN pipeline, data.pad_multiple 128): image [B, Hb, Wb, 3], boxes
[B, G, 4] (resized pixels), classes [B, G] (0..C-1), is_crowd, box_mask [B, G] for
training; image, image_hw [B, 2] (resized, unpadded) and scale [B] for evaluation.

Composition (module names are Paddle's prefixes; see `paddle_rules`):
  backbone  ResNet (b / vd, affine norm frozen, freeze_at 2), res3-res5
  neck      FPN levels 3-7: P3-P5 from res3-5, P6 = conv `fpn_6` on C5, P7 = `fpn_7`
  head      RetinaHead (`retnet_*_fpn3`), 9 anchors per location

No sampling (no PRNG). Departures from Paddle, as documented knobs:
`loss_group_images` sets how many consecutive images share one foreground count (Paddle:
the images of one GPU, 2 in the zoo); `eval_pad_stride` sets the im_info of evaluation,
the resized size rounded up to this multiple per image (Paddle's padded im_info is the
batch's largest image rounded up to 128; its detection output clips boxes to that
size / scale, not to the original image); `anchor_scale` multiplies the anchor sizes
(1 at the zoo's image sizes; build() shrinks it with data.max_size, as for the R-CNNs).
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from detx.models.backbones.resnet import ResNet
from detx.models.heads.retina import RetinaHead, level_anchors, retina_detections, retina_losses
from detx.models.heads.rpn import im_info, padded_hw
from detx.models.layers import Dtype
from detx.models.necks.fpn import retinanet_fpn

LEVELS = (3, 4, 5, 6, 7)


class RetinaNet(nn.Module):
  num_classes: int = 80  # foreground classes
  # backbone
  depth: int = 50
  variant: str = 'b'
  norm: str = 'affine'
  freeze_norm: bool = True
  freeze_at: int = 2
  # head and anchors
  num_convs: int = 4
  head_channels: int = 256
  prior_prob: float = 0.01
  base_scale: float = 4.0
  scales_per_octave: int = 3
  aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5)
  anchor_scale: float = 1.0
  # targets and losses
  positive_overlap: float = 0.5
  negative_overlap: float = 0.4
  gamma: float = 2.0
  alpha: float = 0.25
  sigma: float = 3.0151134457776365
  loss_group_images: int = 2
  # test
  eval_pad_stride: int = 128
  score_threshold: float = 0.05
  pre_nms_top_n: int = 1000
  nms_threshold: float = 0.5
  keep_top_k: int = 100
  dtype: Dtype = jnp.float32
  remat: bool = False  # recompute backbone stages in the backward pass

  HAS_MASKS = False
  TRAIN_KEYS = ('image', 'boxes', 'classes', 'is_crowd', 'box_mask')
  EVAL_KEYS = ('image', 'image_hw', 'scale')

  def setup(self):
    self.backbone = ResNet(self.depth, self.variant, self.norm, self.freeze_norm,
                           self.freeze_at, (3, 4, 5), dtype=self.dtype, remat=self.remat)
    self.neck = retinanet_fpn(256, self.dtype)
    self.head = RetinaHead(self.num_classes, len(self.aspect_ratios) * self.scales_per_octave,
                           self.head_channels, self.num_convs, self.prior_prob, '_fpn3',
                           self.dtype)

  def outputs(self, image, train: bool):
    """Head outputs per level and the matching anchors."""
    feats = self.neck(self.backbone(image.astype(self.dtype), train))
    maps = [feats[l] for l in LEVELS]
    anchors = level_anchors([f.shape[1:3] for f in maps], [2.0 ** l for l in LEVELS],
                            self.base_scale, self.scales_per_octave, self.aspect_ratios,
                            self.anchor_scale)
    return self.head(maps), anchors

  def init_params(self, image):
    """Creates every parameter without targets or NMS:
    `module.init(key, image, method=type(module).init_params)`."""
    return self.outputs(image, False)[0]

  def __call__(self, batch, train: bool):
    image = batch['image']
    n, hb, wb = image.shape[:3]
    outs, anchors = self.outputs(image, train)
    if train:
      losses = retina_losses(
          outs, anchors, batch['boxes'], batch['classes'] + 1, batch['box_mask'],
          batch['is_crowd'], self.num_classes, self.positive_overlap, self.negative_overlap,
          self.gamma, self.alpha, self.sigma, self.loss_group_images)
      losses['loss'] = losses['loss_cls'] + losses['loss_bbox']
      return losses
    # Missing fields (the train loop's init batch): an unpadded image at scale 1.
    hw = batch.get('image_hw', jnp.tile(jnp.array([[hb, wb]], jnp.int32), (n, 1)))
    scale = batch.get('scale', jnp.ones((n,), jnp.float32))
    info = im_info(padded_hw(hw, self.eval_pad_stride, (hb, wb)), scale)
    return retina_detections(outs, anchors, info, self.num_classes,
                             self.score_threshold, self.pre_nms_top_n, self.nms_threshold,
                             self.keep_top_k)


def paddle_rules():
  """detx.weights.paddle name rules: ResNet names for the backbone, `<prefix>_w/_b` for
  the FPN and the head."""
  from detx.weights import paddle as pw
  return pw.RESNET_RULES + pw.DETECTRON_RULES


def build(config):
  """(module, ParamRules) for model.name 'retinanet'."""
  from detx.models import ParamRules
  from detx.models import rcnn
  m = config.model
  b, a, t, loss, nms = m.backbone, m.anchor, m.target, m.loss, m.nms
  module = RetinaNet(
      num_classes=m.num_classes, depth=b.depth, variant=b.variant, norm=b.norm,
      freeze_norm=b.freeze_norm, freeze_at=b.freeze_at,
      num_convs=m.head.num_convs, head_channels=m.head.channels, prior_prob=m.head.prior_prob,
      base_scale=a.base_scale, scales_per_octave=a.scales_per_octave,
      aspect_ratios=tuple(a.aspect_ratios), anchor_scale=rcnn.auto_anchor_scale(config),
      positive_overlap=t.positive_overlap, negative_overlap=t.negative_overlap,
      gamma=loss.gamma, alpha=loss.alpha, sigma=loss.sigma, loss_group_images=loss.group_images,
      eval_pad_stride=m.eval_pad_stride, score_threshold=nms.score_threshold,
      pre_nms_top_n=nms.pre_nms_top_n, nms_threshold=nms.nms_threshold,
      keep_top_k=nms.keep_top_k, dtype=jnp.dtype(m.dtype), remat=bool(m.get('remat', False)))
  return module, ParamRules(rcnn.weight_decay_mask, rcnn.make_lr_mult(b.freeze_at, b.freeze_norm),
                            paddle_rules())
