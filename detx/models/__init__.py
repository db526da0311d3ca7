"""Builds a detector from a config. Every model is listed here: no import-time registry."""
import dataclasses
from typing import Callable

import jax.numpy as jnp
import ml_collections

from detx.models import yolov3


def anchor_scale(config: ml_collections.ConfigDict) -> float:
  """Factor applied to pixel anchors when data.max_size shrinks the zoo's sizes."""
  largest = max(list(config.data.train_sizes) + [config.eval.size])
  if config.data.max_size and config.data.max_size < largest:
    return config.data.max_size / largest
  return 1.0


@dataclasses.dataclass(frozen=True)
class ParamRules:
  """How the optimizer treats each parameter, as Paddle's ParamAttr did.

  decay_mask(params) -> bool pytree: which parameters get the global L2.
  lr_mult(params) -> float pytree or None: per-parameter lr multiplier
  (2.0 for Detectron-style biases, 0.0 for frozen parameters); None = all 1.
  paddle: detx.weights.paddle name rules mapping the variables to Paddle's parameter
  names (model.pretrained, the zoo checkpoints); () = none known.
  """
  decay_mask: Callable
  lr_mult: Callable | None = None
  paddle: tuple = ()


def build_model(config: ml_collections.ConfigDict):
  """Returns (flax module, ParamRules)."""
  m = config.model
  dtype = jnp.dtype(m.dtype)
  if m.name == 'yolov3':
    s = anchor_scale(config)
    module = yolov3.YOLOv3(
        num_classes=m.num_classes,
        anchors=tuple((w * s, h * s) for w, h in m.anchors),
        anchor_masks=tuple(tuple(x) for x in m.anchor_masks),
        depths=tuple(m.depths), width=m.width, ignore_thresh=m.ignore_thresh,
        label_smooth=m.label_smooth, nms=dict(m.nms), conf_thresh=m.conf_thresh,
        dtype=dtype, remat=bool(m.get('remat', False)))
    from detx.weights import paddle as pw
    return module, ParamRules(yolov3.weight_decay_mask, paddle=pw.YOLOV3_RULES)
  if m.name in ('faster_rcnn', 'mask_rcnn', 'cascade_rcnn'):
    from detx.models import rcnn
    return rcnn.build(config)
  if m.name == 'retinanet':
    from detx.models import retinanet
    return retinanet.build(config)
  raise ValueError(f'unknown model.name {m.name!r}; known: yolov3, faster_rcnn, mask_rcnn, '
                   'cascade_rcnn, retinanet')
