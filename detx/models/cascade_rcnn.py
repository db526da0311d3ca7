"""Cascade R-CNN (PADDLEDET_SPEC §2.5) on ResNet-FPN: three box heads (`bbox_head`,
`bbox_head_2`, `bbox_head_3`; Paddle's `fc6_2`, `cls_score_3`, ...) at IoU 0.5 / 0.6 / 0.7
with class-agnostic regression, from the `cascade` sub-config: fg_thresholds, reg_weights
(stage variances 1/w, 1/w, 2/w, 2/w), loss_weights (also the stages' lr: 1 / weight).
"""
import jax
import jax.numpy as jnp

from detx import ops
from detx.models import rcnn
from detx.models.heads import roi_heads
from detx.models.rcnn import RCNN
from detx.ops.boxes import DEFAULT_SCALE_CLIP


def cascade_variances(reg_weight: float):
  """Cascade stage variance from its bbox_reg_weight w: [1/w, 1/w, 2/w, 2/w]."""
  return (1.0 / reg_weight, 1.0 / reg_weight, 2.0 / reg_weight, 2.0 / reg_weight)


class CascadeRCNN(RCNN):
  """Cascade R-CNN (FPN): 3 stages at IoU 0.5 / 0.6 / 0.7, class-agnostic regression."""
  def setup_heads(self):
    if not self.fpn:
      raise ValueError('Cascade R-CNN is built on FPN (as in PaddleDetection)')
    self.bbox_head = self.make_box_head('', 2)
    self.bbox_head_2 = self.make_box_head('_2', 2)
    self.bbox_head_3 = self.make_box_head('_3', 2)

  def stage_heads(self):
    return (self.bbox_head, self.bbox_head_2, self.bbox_head_3)

  def init_heads(self, feats):
    r = self.cfg.roi.resolution
    x = jnp.zeros((1, r, r, self.cfg.neck.channels), self.dtype)
    return [head(x) for head in self.stage_heads()]

  def refine(self, rois, deltas, stage: int, image_hw=None):
    """Decode the foreground slot of class-agnostic deltas [N, K, 8] with the stage's
    variance: Paddle's box_coder (architectures/cascade_rcnn.py:150-165 at 597145c), with
    no clip to the image and no clamp of dw, dh. model.roi.pixel_offset=False is
    PaddleDetection 2.x's CascadeHead: delta2bbox (no +1 pixel, dw, dh clamped at
    log(1000 / 16)), then clipped to the input image [0, w] x [0, h] (image_hw [N, 2])."""
    d = deltas.reshape(deltas.shape[:-1] + (2, 4))[..., 1, :]
    var = cascade_variances(self.cfg.cascade.reg_weights[stage])
    if self.cfg.roi.get('pixel_offset', True):
      return jax.lax.stop_gradient(ops.decode_boxes(rois, d, var, legacy=True, clip=None))
    boxes = ops.decode_boxes(rois, d, var, legacy=False, clip=DEFAULT_SCALE_CLIP)
    if image_hw is not None:
      boxes = ops.clip_boxes(boxes, image_hw.astype(jnp.float32)[:, None, :], legacy=False)
    return jax.lax.stop_gradient(boxes)

  def roi_losses(self, feats, rois, valid, batch, key):
    losses = {}
    for i, head in enumerate(self.stage_heads()):
      thr = self.cfg.cascade.fg_thresholds[i]
      kw = dict(fg_thresh=thr, bg_thresh_hi=thr, class_agnostic=True,
                bbox_reg_weights=cascade_variances(self.cfg.cascade.reg_weights[i]))
      if i == 0:
        t = self.sample(key, rois, valid, batch, **kw)
      else:
        t = self.sample(None, rois, valid, batch, is_cascade=True, **kw)
      cls, box, _ = self.box_head(head, feats, t['rois'], train=True)
      w = self.cfg.cascade.loss_weights[i]
      losses[f'loss_cls_{i}'], losses[f'loss_bbox_{i}'] = roi_heads.fast_rcnn_losses(
          cls, box, t, 2, weight=w)
      if i < 2:
        rois, valid = self.refine(t['rois'], box, i, batch['image_hw']), t['valid']
    return losses

  def stage_outputs(self, feats, rois, image_hw):
    """(class probabilities [N, K, C] averaged over the stages, stage-3 deltas, stage-3
    RoIs), before NMS. cascade.score_rois 'last' (the zoo): every stage's classifier on
    the stage-3 RoIs' features; 'own' (PaddleDetection 2.x): each stage's scores on the
    RoIs it was given."""
    heads = self.stage_heads()
    own = self.cfg.cascade.get('score_rois', 'last') == 'own'
    probs = 0.0
    for i in range(2):
      cls, box, _ = self.box_head(heads[i], feats, rois)
      if own:
        probs = probs + jax.nn.softmax(cls, axis=-1) / 3.0
      rois = self.refine(rois, box, i, image_hw)
    if own:
      cls, box3, _ = self.box_head(heads[2], feats, rois)
      return probs + jax.nn.softmax(cls, axis=-1) / 3.0, box3, rois
    n, k = rois.shape[:2]
    pooled = self.pool(feats, rois, self.cfg.roi.resolution)
    box3 = None
    for head in heads:  # every stage's classifier on the stage-3 RoI features
      cls, box = head(pooled)
      probs = probs + jax.nn.softmax(cls.reshape(n, k, -1), axis=-1) / 3.0
      box3 = box.reshape(n, k, -1)
    return probs, box3, rois

  def predict(self, feats, rois, valid, batch):
    probs, box3, rois = self.stage_outputs(feats, rois, batch['image_hw'])
    var = cascade_variances(self.cfg.cascade.reg_weights[2])
    # PaddleDetection 597145c roi_heads/cascade_head.py:210 box_clip(input=decoded_box,
    # im_info=im_info): the padded eval im_info (FasterRCNNEvalFeed use_padded_im_info),
    # i.e. round(padded size / scale) - 1, not the original image as BBoxHead's im_shape.
    return self.detect(probs, box3, rois, valid, batch, var, True,
                       clip_hw=ops.box_clip_size(batch['im_info']))


def param_rules(config, module: CascadeRCNN):
  """The R-CNN rules with each stage's lr at 1 / its loss weight, weights and biases alike
  (no Detectron x2 on the stage biases). PaddleDetection 597145c:
  architectures/cascade_rcnn.py:133 passes `wb_scalar=1.0 / self.cascade_rcnn_loss_weight[i]`
  (loss weights [1.0, 0.5, 0.25], :71) to CascadeBBoxHead.get_output, which sets
  `learning_rate=wb_scalar` on cls_score / bbox_pred weights and biases
  (roi_heads/cascade_head.py:77-93) and on FC6FC7Head's fc6 / fc7 weights and biases
  (:280-295). The `learning_rate=2.0` biases of `_head_share` (:228-253) belong to the
  eval program only, which never runs the optimizer."""
  names = ('bbox_head', 'bbox_head_2', 'bbox_head_3')
  return rcnn.param_rules(config, module, {n: 1.0 / w for n, w in
                                           zip(names, config.model.cascade.loss_weights)})
