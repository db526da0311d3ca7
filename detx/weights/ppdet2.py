"""PaddleDetection 2.x state-dict names -> the Paddle 1.x names detx's rules read.

A 2.x `.pdparams` (ppdet's `model.state_dict()`, e.g. 'backbone.res2.res2a.branch2a.conv.
weight', 'yolo_head.yolo_output.0.weight') is renamed to the zoo's 1.x names
('res2a_branch2a_weights', 'yolo_output.0.conv.weights') and then loaded by the same
rules as a 1.x checkpoint (detx.weights.paddle), so one loader serves both eras.

A `Rename` is a regex on the full 2.x name and a 1.x template; where 2.x differs from
the zoo by design in an array's content (class order, no background slot), the rename
also carries a `transform` of the array. Rename lists live beside this module, one per
part (ppdet2_resnet: ResNet/ResNeXt/SENet and FPN; ppdet2_rcnn: RPN, box, cascade, mask
and RetinaNet heads; ppdet2_yolo: DarkNet, MobileNet-V1, the YOLOv3 and SSD heads), each
as RENAMES = {part name: [Rename, ...]}; `parts_for(config)` says which parts a model has.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Mapping, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rename:
  pattern: str                      # full-match regex on the 2.x name
  template: str                     # 1.x name, with the pattern's named groups
  transform: Optional[Callable[[np.ndarray], np.ndarray]] = None

  def apply(self, name: str) -> Optional[str]:
    m = re.fullmatch(self.pattern, name)
    return self.template.format(**m.groupdict()) if m else None


def looks_2x(names: Iterable[str]) -> bool:
  """True for a 2.x state dict: dotted module paths ('backbone.', 'neck.', '*_head.')."""
  names = list(names)
  return bool(names) and all('.' in n for n in names) and any(
      n.split('.', 1)[0] in ('backbone', 'neck', 'yolo_head', 'rpn_head', 'bbox_head',
                             'mask_head', 'head', 'ssd_head') for n in names)


def rename(state: Mapping[str, np.ndarray], renames: Iterable[Rename]):
  """({1.x name: array}, [2.x names no rename matched]); the first matching rename wins."""
  renames = list(renames)
  out, unmatched = {}, []
  for name, value in state.items():
    for r in renames:
      new = r.apply(name)
      if new is not None:
        out[new] = r.transform(np.asarray(value)) if r.transform else np.asarray(value)
        break
    else:
      unmatched.append(name)
  return out, unmatched


def all_renames() -> dict[str, list[Rename]]:
  """Every part's rename list, by part name."""
  from detx.weights import ppdet2_rcnn, ppdet2_resnet, ppdet2_yolo
  merged = {}
  for mod in (ppdet2_resnet, ppdet2_rcnn, ppdet2_yolo):
    for part, lst in mod.RENAMES.items():
      assert part not in merged, f'ppdet2: part {part!r} defined twice'
      merged[part] = lst
  return merged


def parts_for(config) -> list[str]:
  """The part names of config's model, in match order."""
  m = config.model
  parts = [m.backbone.name]                      # 'resnet', 'senet', 'darknet', 'mobilenet'
  if m.get('neck') is not None and m.neck.get('name', 'none') != 'none':
    parts.append(m.neck.name)                    # 'fpn'
  parts += {'yolov3': ['yolo_head'], 'ssd': ['ssd_head'], 'retinanet': ['retina_head'],
            'faster_rcnn': ['rpn', 'bbox_head'], 'mask_rcnn': ['rpn', 'bbox_head', 'mask_head'],
            'cascade_rcnn': ['rpn', 'cascade_head']}[m.name]
  if 'rpn' in parts and 'fpn' not in parts:
    parts[parts.index('rpn')] = 'rpn_c4'         # one level, 15 anchors: other names, order
  return parts


def to_1x(state: Mapping[str, np.ndarray], config):
  """(1.x-named arrays, unmatched 2.x names) for config's model."""
  table = all_renames()
  renames = [r for p in parts_for(config) for r in table.get(p, [])]
  return rename(state, renames)
