"""The detector contract, and the one table from `model.name` to its builder.

Every detector is a flax module called as

  module.apply(variables, batch, train=True, rngs={'sample': key}) -> {'loss', parts...}
  module.apply(variables, batch, train=False) -> {'boxes' [B, K, 4] original-image pixels,
      'scores' [B, K], 'classes' [B, K] (0..C-1), 'valid' [B, K] (, 'masks' [B, K, M, M])}

and declares, as class attributes, the batch fields its jitted steps read (TRAIN_KEYS,
EVAL_KEYS) and whether it predicts masks (HAS_MASKS). A `Family` adds what the rest of
detx needs: the input pipeline (a name in detx.data.pipelines), the builder (config ->
module) and the optimizer's parameter rules (detx.optim.ParamRules).

Adding a family: a module in detx/models/, a builder and rules there, one row in FAMILIES.
"""
import dataclasses
from typing import Callable

import flax.linen as nn
import ml_collections

from detx import optim
from detx.errors import ConfigError
from detx.models import cascade_rcnn, mask_rcnn, rcnn, retinanet, ssd, yolov3


@dataclasses.dataclass(frozen=True)
class Family:
  module: type                                        # the flax module class
  build: Callable[[ml_collections.ConfigDict], nn.Module]
  rules: Callable[[ml_collections.ConfigDict, nn.Module], optim.ParamRules]
  pipeline: str                                       # detx.data.pipelines name

  @property
  def train_keys(self) -> tuple[str, ...]:
    return self.module.TRAIN_KEYS

  @property
  def eval_keys(self) -> tuple[str, ...]:
    return self.module.EVAL_KEYS

  @property
  def has_masks(self) -> bool:
    return bool(getattr(self.module, 'HAS_MASKS', False))


FAMILIES = {
    'yolov3': Family(yolov3.YOLOv3, yolov3.build, yolov3.param_rules, 'yolo'),
    'faster_rcnn': Family(rcnn.FasterRCNN, rcnn.build, rcnn.param_rules, 'rcnn'),
    'mask_rcnn': Family(mask_rcnn.MaskRCNN, rcnn.build, rcnn.param_rules, 'rcnn'),
    'cascade_rcnn': Family(cascade_rcnn.CascadeRCNN, rcnn.build,
                           cascade_rcnn.param_rules, 'rcnn'),
    'retinanet': Family(retinanet.RetinaNet, retinanet.build, retinanet.param_rules, 'rcnn'),
    'ssd': Family(ssd.SSD, ssd.build, ssd.param_rules, 'ssd'),
}


def family(config_or_name) -> Family:
  """The Family of `config.model.name` (or of a name)."""
  name = config_or_name if isinstance(config_or_name, str) else config_or_name.model.name
  if name not in FAMILIES:
    raise ConfigError(f'unknown model.name {name!r}; known: {", ".join(FAMILIES)}')
  return FAMILIES[name]


def build_model(config: ml_collections.ConfigDict):
  """(flax module, ParamRules) for the config."""
  fam = family(config)
  module = fam.build(config)
  return module, fam.rules(config, module)


def model_inputs(module, batch: dict, train: bool) -> dict:
  """The batch fields a model's jitted step reads (its TRAIN_KEYS / EVAL_KEYS)."""
  return {k: batch[k] for k in (module.TRAIN_KEYS if train else module.EVAL_KEYS)}


def zoo_long_side(config) -> int:
  """The largest image side the zoo's anchors were set for: YOLO's largest input size,
  the R-CNN pipeline's long side (1333)."""
  if family(config).pipeline == 'yolo':
    return max(list(config.data.train_sizes) + [config.eval.size])
  return config.data.long_side


def anchor_scale(config) -> float:
  """The factor applied to pixel anchors (and the FPN canonical RoI size):
  model.anchor_scale when set, else data.max_size / zoo_long_side when data.max_size
  caps the zoo's images (objects shrink with the images, so do anchors), else 1."""
  if config.model.get('anchor_scale', 0.0):
    return float(config.model.anchor_scale)
  largest = zoo_long_side(config)
  if config.data.max_size and config.data.max_size < largest:
    return config.data.max_size / largest
  return 1.0
