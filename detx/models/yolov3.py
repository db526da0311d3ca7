"""YOLOv3: DarkNet backbone + three-level head, Paddle's yolov3_loss and yolo_box + NMS.

`YOLOv3(batch, train=True)` returns the losses; `train=False` returns detections in
original-image pixels (static top-k with a validity mask).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from detx import ops
from detx.models.backbones.darknet import DarkNet
from detx.models.heads.yolo import YoloHead
from detx.models.layers import Dtype

# Paddle's COCO anchors (w, h) in network-input pixels at 608, and the level masks
# (the stride-32 output gets the largest anchors).
COCO_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                (116, 90), (156, 198), (373, 326))
ANCHOR_MASKS = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
STRIDES = (32, 16, 8)


class YOLOv3(nn.Module):
  num_classes: int
  anchors: Sequence[Sequence[float]] = COCO_ANCHORS
  anchor_masks: Sequence[Sequence[int]] = ANCHOR_MASKS
  depths: Sequence[int] = (1, 2, 8, 8, 4)
  width: float = 1.0
  ignore_thresh: float = 0.7
  label_smooth: bool = True
  nms: Any = None  # dict: score_threshold, nms_top_k, keep_top_k, nms_threshold
  conf_thresh: float = 0.01
  dtype: Dtype = jnp.float32
  remat: bool = False

  TRAIN_KEYS = ('image', 'boxes', 'classes', 'scores', 'box_mask')
  EVAL_KEYS = ('image', 'orig_size')

  def setup(self):
    self.backbone = DarkNet(self.depths, self.width, dtype=self.dtype, remat=self.remat)
    self.head = YoloHead(self.num_classes, tuple(len(m) for m in self.anchor_masks),
                         width=self.width, dtype=self.dtype)

  def features(self, images, train: bool):
    return self.head(self.backbone(images.astype(self.dtype), train), train)

  def __call__(self, batch, train: bool):
    outs = self.features(batch['image'], train)
    return self.losses(outs, batch) if train else self.detect(outs, batch)

  def losses(self, outs, batch):
    mask = batch['box_mask']
    gt_box = ops.xyxy_to_cxcywh(batch['boxes']) * mask[..., None]
    flat_anchors = [float(v) for a in self.anchors for v in a]
    losses = {}
    for i, (out, m) in enumerate(zip(outs, self.anchor_masks)):
      per_image = ops.yolo_loss(
          out, gt_box, batch['classes'], batch['scores'] * mask,
          anchors=flat_anchors, anchor_mask=list(m), class_num=self.num_classes,
          ignore_thresh=self.ignore_thresh, downsample_ratio=STRIDES[i],
          use_label_smooth=self.label_smooth)
      losses[f'loss_level{i}'] = per_image.mean()
    losses['loss'] = sum(losses.values())
    return losses

  def detect(self, outs, batch):
    boxes, scores = [], []
    for i, (out, m) in enumerate(zip(outs, self.anchor_masks)):
      b, s = ops.yolo_box(out, batch['orig_size'], [self.anchors[k] for k in m],
                          self.num_classes, self.conf_thresh, STRIDES[i])
      boxes.append(b)
      scores.append(s)
    nms = dict(self.nms or {})
    return ops.multiclass_nms(jnp.concatenate(boxes, 1), jnp.concatenate(scores, 1),
                              normalized=False, background_label=-1, **nms)


def weight_decay_mask(params) -> Any:
  """Paddle's YOLO regularisation: L2 on conv weights, none on BN and the output bias."""
  import jax
  def keep(path, _):
    names = [getattr(k, 'key', str(k)) for k in path]
    return 'bn' not in names and names[-1] != 'bias'
  return jax.tree_util.tree_map_with_path(keep, params)
