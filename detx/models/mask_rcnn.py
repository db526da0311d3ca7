"""Mask R-CNN (PADDLEDET_SPEC §2.4): Faster R-CNN (detx.models.rcnn) plus the mask branch,
with the `mask` sub-config: resolution (output masks: FPN 28, C4 14), roi_resolution (FPN
RoIAlign size for the mask head, 14), num_convs (FPN 4, C4 0), conv_dim (256), max_points
/ max_polygons (the batch's polygon budget per instance).

Training targets are Paddle's generate_mask_labels (detx.ops.masks.polygon_mask_targets):
each foreground RoI's best-overlapping non-crowd instance, its polygons rasterised in the
RoI (gt_polys / gt_poly_ids, original pixels).

  mask_head MaskHead: C4 on the box head's res5 output (14x14 masks), FPN on 14x14
            RoIAlign features with 4 convs (28x28 masks)

Evaluation adds 'masks' [B, K, M, M]: probabilities of the predicted class.
"""
import math

import jax
import jax.numpy as jnp

from detx.models.heads.mask_head import MaskHead, mask_loss, select_class
from detx.models.rcnn import RCNN
from detx.ops.masks import polygon_mask_targets


class MaskRCNN(RCNN):
  """Mask R-CNN: Faster R-CNN plus the mask branch (C4: res5 reuse, 14x14; FPN: 28x28)."""
  HAS_MASKS = True
  TRAIN_KEYS = RCNN.TRAIN_KEYS + ('gt_polys', 'gt_poly_ids')

  def setup_heads(self):
    super().setup_heads()
    mk = self.cfg.mask
    self.mask_head = MaskHead(self.num_classes, mk.num_convs, mk.conv_dim, self.dtype)

  def init_extra(self, box_out):
    if self.fpn:
      r = self.cfg.mask.roi_resolution
      return self.mask_head(jnp.zeros((1, r, r, self.cfg.neck.channels), self.dtype))
    return self.mask_head(box_out[2])

  def extra_losses(self, feats, t, box_feats, batch):
    n, s = t['labels'].shape
    r = self.cfg.roi
    f = int(math.floor(r.batch_size_per_im * r.fg_fraction))  # fg slots first
    f = min(f, s)
    labels = t['labels'][:, :f]
    fg = (labels > 0) & t['valid'][:, :f]
    fg_rois = t['rois'][:, :f]
    mk = self.cfg.mask
    candidates = batch['box_mask'] & ~batch['is_crowd'].astype(bool)
    targets = polygon_mask_targets(batch['gt_polys'], batch['gt_poly_ids'], candidates,
                                   jax.lax.stop_gradient(fg_rois), batch['scale'],
                                   mk.resolution, mk.get('max_polygons', 64))
    if self.fpn:
      x = self.pool_masks(feats, fg_rois)
    else:  # the box head's res5 output of the foreground RoIs
      x = box_feats.reshape((n, s) + box_feats.shape[1:])[:, :f].reshape(
          (n * f,) + box_feats.shape[1:])
    logits = self.mask_head(x)
    logits = logits.reshape((n, f) + logits.shape[1:])
    return {'loss_mask': mask_loss(logits, targets, labels, fg)}

  def pool_masks(self, feats, boxes):
    return self.pool(feats, boxes, self.cfg.mask.roi_resolution)

  def predict_masks(self, feats, dets, batch):
    n, k = dets['valid'].shape
    boxes = jax.lax.stop_gradient(dets['boxes']) * batch['scale'][:, None, None]
    if self.fpn:
      x = self.pool_masks(feats, boxes)
    else:
      x = self.bbox_head.features(self.pool(feats, boxes, self.cfg.roi.resolution))
    logits = self.mask_head(x)
    logits = logits.reshape((n, k) + logits.shape[1:])
    probs = jax.nn.sigmoid(select_class(logits, dets['classes'] + 1))
    dets = dict(dets)
    dets['masks'] = jnp.where(dets['valid'][..., None, None], probs, 0.0)
    return dets
