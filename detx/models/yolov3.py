"""YOLOv3: a backbone (DarkNet53 in the zoo; any from detx.models.backbones) + the
three-level head, Paddle's yolov3_loss and yolo_box + multiclass NMS.

`YOLOv3(batch, train=True)` returns the losses; `train=False` returns detections in
original-image pixels (static top-k with a validity mask). The module takes the
`model` sub-config whole (`cfg`): backbone, anchors, anchor_masks, ignore_thresh,
label_smooth, conf_thresh, nms.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from detx import ops, optim
from detx.models import backbones, inputs
from detx.models.heads.yolo import YoloHead
from detx.models.layers import Dtype

STRIDES = (32, 16, 8)  # the head's outputs, coarsest first
LEVELS = (3, 4, 5)


class YOLOv3(nn.Module):
  cfg: Any                 # the model sub-config (FrozenConfigDict)
  anchor_scale: float = 1.0
  dtype: Dtype = jnp.float32

  TRAIN_KEYS = ('image', 'boxes', 'classes', 'scores', 'box_mask')
  EVAL_KEYS = ('image', 'orig_size')
  HAS_MASKS = False

  @property
  def anchors(self):
    return tuple((w * self.anchor_scale, h * self.anchor_scale) for w, h in self.cfg.anchors)

  def setup(self):
    c = self.cfg
    self.backbone = backbones.build(c.backbone, LEVELS, self.dtype, c.remat)
    self.head = YoloHead(c.num_classes, tuple(len(m) for m in c.anchor_masks),
                         width=c.backbone.width, dtype=self.dtype)

  def features(self, images, train: bool):
    feats = self.backbone(images.astype(self.dtype), train)
    return self.head([feats[l] for l in LEVELS], train)

  def __call__(self, batch, train: bool):
    outs = self.features(inputs.batch_image(batch), train)  # uint8: normalised here
    return self.losses(outs, batch) if train else self.detect(outs, batch)

  def losses(self, outs, batch):
    c = self.cfg
    mask = batch['box_mask']
    gt_box = ops.xyxy_to_cxcywh(batch['boxes']) * mask[..., None]
    flat_anchors = [float(v) for a in self.anchors for v in a]
    losses = {}
    for i, (out, m) in enumerate(zip(outs, c.anchor_masks)):
      per_image = ops.yolo_loss(
          out, gt_box, batch['classes'], batch['scores'] * mask,
          anchors=flat_anchors, anchor_mask=list(m), class_num=c.num_classes,
          ignore_thresh=c.ignore_thresh, downsample_ratio=STRIDES[i],
          use_label_smooth=c.label_smooth)
      losses[f'loss_level{i}'] = per_image.mean()
    losses['loss'] = sum(losses.values())
    return losses

  def detect(self, outs, batch):
    c = self.cfg
    anchors = self.anchors
    boxes, scores = [], []
    for i, (out, m) in enumerate(zip(outs, c.anchor_masks)):
      b, s = ops.yolo_box(out, batch['orig_size'], [anchors[k] for k in m],
                          c.num_classes, c.conf_thresh, STRIDES[i])
      boxes.append(b)
      scores.append(s)
    return ops.multiclass_nms(jnp.concatenate(boxes, 1), jnp.concatenate(scores, 1),
                              normalized=False, background_label=-1, **dict(c.nms.items()))


def build(config) -> YOLOv3:
  from detx.models.base import anchor_scale
  return YOLOv3(ml_collections.FrozenConfigDict(config.model), anchor_scale(config),
                jnp.dtype(config.model.dtype))


def param_rules(config, module: YOLOv3) -> optim.ParamRules:
  """Paddle's YOLOv3 regularisation (L2 on conv kernels only) and the backbone's frozen
  parts; Paddle names for DarkNet53 and the head."""
  from detx.weights import paddle as pw
  b = config.model.backbone
  return optim.ParamRules(optim.kernel_decay_mask,
                          optim.lr_multipliers(backbones.trainable(b)),
                          pw.YOLOV3_RULES if b.name == 'darknet' else
                          pw.scoped('backbone', pw.RESNET_RULES) + pw.scoped('head', pw.YOLOV3_RULES))
