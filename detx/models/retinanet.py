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
`loss.group_images` sets how many consecutive images share one foreground count (Paddle:
the images of one GPU, 2 in the zoo); `eval_pad_stride` sets the im_info of evaluation,
the resized size rounded up to this multiple per image (Paddle's padded im_info is the
batch's largest image rounded up to 128; its detection output clips boxes to that
size / scale, not to the original image); `anchor_scale` multiplies the anchor sizes
(1 at the zoo's image sizes; build() shrinks it with data.max_size, as for the R-CNNs).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from detx import optim
from detx.models import backbones, extent, inputs, necks
from detx.models.heads.retina import RetinaHead, level_anchors, retina_detections, retina_losses
from detx.models.layers import Dtype
from detx.ops.batching import im_info, padded_hw


class RetinaNet(nn.Module):
  cfg: Any                  # the model sub-config (FrozenConfigDict)
  anchor_scale: float = 1.0
  dtype: Dtype = jnp.float32
  eval_geometry: str = 'paddle'  # eval.geometry: 'paddle' (detx.models.extent) or 'bucket'

  HAS_MASKS = False
  TRAIN_KEYS = ('image', 'boxes', 'classes', 'is_crowd', 'box_mask')
  EVAL_KEYS = ('image', 'image_hw', 'scale')

  @property
  def levels(self) -> tuple[int, ...]:
    return tuple(range(self.cfg.neck.min_level, self.cfg.neck.max_level + 1))

  def setup(self):
    c = self.cfg
    self.backbone = backbones.build(c.backbone, necks.input_levels(c.neck), self.dtype,
                                    c.remat)
    self.neck = necks.build(c.neck, self.dtype)
    self.head = RetinaHead(c.num_classes, len(c.anchor.aspect_ratios) * c.anchor.scales_per_octave,
                           c.head, f'_fpn{self.levels[0]}', self.dtype)

  def outputs(self, image, train: bool):
    """Head outputs per level and the matching anchors."""
    feats = self.neck(self.backbone(image.astype(self.dtype), train))
    a = self.cfg.anchor
    maps = [feats[l] for l in self.levels]
    anchors = level_anchors([f.shape[1:3] for f in maps], [2.0 ** l for l in self.levels],
                            a.base_scale, a.scales_per_octave, a.aspect_ratios,
                            self.anchor_scale)
    return self.head(maps), anchors

  def init_params(self, image):
    """Creates every parameter without targets or NMS:
    `module.init(key, image, method=type(module).init_params)`."""
    return self.outputs(image, False)[0]

  def __call__(self, batch, train: bool):
    image = inputs.batch_image(batch)  # uint8 batches: normalised here
    n, hb, wb = image.shape[:3]
    c = self.cfg
    if train:
      outs, anchors = self.outputs(image, train)
      t, loss = c.target, c.loss
      losses = retina_losses(
          outs, anchors, batch['boxes'], batch['classes'] + 1, batch['box_mask'],
          batch['is_crowd'], c.num_classes, t.positive_overlap, t.negative_overlap,
          loss.gamma, loss.alpha, loss.sigma, loss.group_images)
      losses['loss'] = losses['loss_cls'] + losses['loss_bbox']
      return losses
    # Missing fields (the train loop's init batch): an unpadded image at scale 1.
    hw = batch.get('image_hw', jnp.tile(jnp.array([[hb, wb]], jnp.int32), (n, 1)))
    scale = batch.get('scale', jnp.ones((n,), jnp.float32))
    hw = padded_hw(hw, c.eval_pad_stride, (hb, wb))
    # Paddle's extent per image (per batch of 2 in Paddle: the larger image's, rounded up)
    with extent.scope(hw, (hb, wb), self.eval_geometry == 'paddle') as masked:
      outs, anchors = self.outputs(image, train)
      keep = [extent.valid(l.shape[1:3])[..., None] for l, _ in outs] if masked else None
    if masked:  # no anchors beyond the extent: their scores are sigmoid(-inf) = 0
      outs = [(jnp.where(k, l, -jnp.inf), d) for (l, d), k in zip(outs, keep)]
    info = im_info(hw, scale)
    return retina_detections(outs, anchors, info, c.num_classes, c.nms.score_threshold,
                             c.nms.pre_nms_top_n, c.nms.nms_threshold, c.nms.keep_top_k)


def paddle_rules():
  """detx.weights.paddle name rules: ResNet names for the backbone, `<prefix>_w/_b` for
  the FPN and the head."""
  from detx.weights import paddle as pw
  return pw.RESNET_RULES + pw.DETECTRON_RULES


def build(config) -> RetinaNet:
  from detx.models.base import anchor_scale
  return RetinaNet(ml_collections.FrozenConfigDict(config.model), anchor_scale(config),
                   jnp.dtype(config.model.dtype), extent.geometry(config))


def param_rules(config, module: RetinaNet) -> optim.ParamRules:
  """As the R-CNNs: L2 on kernels, biases outside the backbone at lr x2, frozen parts 0."""
  b = config.model.backbone
  return optim.ParamRules(
      optim.kernel_decay_mask,
      optim.lr_multipliers(backbones.trainable(b), 2.0, b.freeze_norm), paddle_rules())
