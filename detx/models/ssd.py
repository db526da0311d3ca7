"""SSD (PaddleDetection 597145c: ppdet/modeling/architectures/ssd.py, configs/
ssd_mobilenet_v1_voc.yml): a backbone with extra blocks (MobileNet-V1, levels 4-9), the
multibox head, prior boxes, fluid.layers.ssd_loss and detection_output.

  module.apply(variables, batch, train=True) -> {'loss', 'loss_conf', 'loss_loc', 'num_pos'}
  module.apply(variables, batch, train=False) -> {'boxes' [B, K, 4] original-image pixels,
      'scores', 'classes' (0..C-1), 'valid'}, K = nms.keep_top_k (200)

Batch fields (the SSD pipeline): image [B, S, S, 3] (BGR, (x - 127.5) / 127.502231),
boxes [B, G, 4] normalised xyxy, classes [B, G] (0..C-1), box_mask [B, G] for training;
image and orig_size [B, 2] (h, w) for evaluation.

Model sub-config: backbone (with extra_blocks and conv_learning_rate), prior (base_size,
min_sizes, max_sizes (0 = none), aspect_ratios, flip, clip, offset, variances), loss
(overlap_threshold, neg_pos_ratio, neg_overlap), nms (detection_output's settings,
max_candidates -1 = Paddle's per-class kernel). The prior sizes are pixels at
prior.base_size (300); at another input size S they scale by S / base_size (the priors,
being normalised, are then those of the 300 model).

Detections: Paddle's normalised boxes, clipped to [0, 1] and scaled by the original
width and height as ppdet's bbox2out did for `is_bbox_normalized` models.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from detx import ops, optim
from detx.models import backbones
from detx.models.heads.ssd import MultiBoxHead
from detx.models.layers import Dtype
from detx.ops.priors import priors_per_cell, ssd_priors

LEVELS = (4, 5, 6, 7, 8, 9)


class SSD(nn.Module):
  cfg: Any                 # the model sub-config (FrozenConfigDict)
  dtype: Dtype = jnp.float32

  TRAIN_KEYS = ('image', 'boxes', 'classes', 'box_mask')
  EVAL_KEYS = ('image', 'orig_size')
  HAS_MASKS = False

  def setup(self):
    c = self.cfg
    if not c.backbone.get('extra_blocks', False):
      raise ValueError('SSD needs model.backbone.extra_blocks=True (levels 4-9)')
    pr = c.prior
    counts = [priors_per_cell(1, bool(m), ar, pr.flip)
              for m, ar in zip(pr.max_sizes, pr.aspect_ratios)]
    self.backbone = backbones.build(c.backbone, LEVELS, self.dtype, c.remat)
    self.head = MultiBoxHead(c.num_classes + 1, tuple(counts), dtype=self.dtype)

  def priors(self, feats, image_hw):
    pr = self.cfg.prior
    s = image_hw[0] / pr.base_size
    return ssd_priors([f.shape[1:3] for f in feats], image_hw,
                      [m * s for m in pr.min_sizes], [m * s for m in pr.max_sizes],
                      pr.aspect_ratios, pr.flip, pr.clip, pr.offset, pr.variances)

  def features(self, image, train: bool):
    by_level = self.backbone(image.astype(self.dtype), train)
    return [by_level[l] for l in LEVELS]

  def init_params(self, image):
    """The head's (loc, conf) only, no loss or NMS: the cheap init,
    `module.init(key, image, method=SSD.init_params)`."""
    return self.head(self.features(image, False))

  def __call__(self, batch, train: bool):
    image = batch['image']
    feats = self.features(image, train)
    loc, conf = self.head(feats)
    priors, var = self.priors(feats, image.shape[1:3])
    c = self.cfg
    if train:
      return ops.ssd_loss(loc, conf, batch['boxes'], batch['classes'] + 1, batch['box_mask'],
                          priors, var, **dict(c.loss.items()))
    n = c.nms
    out = ops.ssd_detection_output(
        jax.lax.stop_gradient(loc), jax.lax.stop_gradient(conf), priors, var,
        background_label=0, nms_threshold=n.nms_threshold, nms_top_k=n.nms_top_k,
        keep_top_k=n.keep_top_k, score_threshold=n.score_threshold,
        max_candidates=n.max_candidates)
    hw = batch['orig_size'].astype(jnp.float32)
    wh = jnp.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], -1)[:, None]
    valid = out['valid']
    out['boxes'] = jnp.where(valid[..., None], jnp.clip(out['boxes'], 0.0, 1.0) * wh, 0.0)
    out['classes'] = jnp.where(valid, out['classes'] - 1, 0)
    return out


def build(config) -> SSD:
  return SSD(ml_collections.FrozenConfigDict(config.model), jnp.dtype(config.model.dtype))


def decay_mask(params):
  """Paddle's global L2 reaches every parameter without its own regularizer: all conv
  kernels and the head's biases; the backbone norms have L2Decay(norm_decay = 0)."""
  def rule(path, _):
    names = optim.path_names(path)
    return names[0] != 'backbone' or names[-1] == 'kernel'
  return jax.tree_util.tree_map_with_path(rule, params)


def param_rules(config, module: SSD) -> optim.ParamRules:
  """L2 as `decay_mask`; lr: backbone conv kernels x backbone.conv_learning_rate (SSD:
  0.1, Paddle's ParamAttr on MobileNet's conv weights only), backbone norms x1 (0 when
  frozen), head x1. Paddle names: MobileNet's, and the head's automatic conv2d_<k>."""
  from detx.weights import paddle as pw
  b = config.model.backbone
  base = optim.lr_multipliers(backbones.trainable(b))
  conv_lr = float(b.get('conv_learning_rate', 1.0))

  def lr_mult(params):
    out = base(params)
    if 'backbone' in out:
      out['backbone'] = jax.tree_util.tree_map_with_path(
          lambda p, m: m * conv_lr if optim.path_names(p)[-1] == 'kernel' else m,
          out['backbone'])
    return out

  head = (pw.Rule(r'(?P<p>conv2d_\d+)/kernel', '{p}.w_0', layout=pw.KERNEL),
          pw.Rule(r'(?P<p>conv2d_\d+)/bias', '{p}.b_0'))
  return optim.ParamRules(decay_mask, lr_mult,
                          pw.scoped('backbone', pw.RESNET_RULES) + pw.scoped('head', head))
