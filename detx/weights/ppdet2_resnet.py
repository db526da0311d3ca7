"""PaddleDetection 2.x -> 1.x names (see detx.weights.ppdet2) for ResNet / ResNeXt,
SENet and the FPN neck.

2.x (ppdet.modeling.backbones.resnet; SENet is a ResNet subclass with an SE layer per
block and 2.x keeps ResNet's names for it):
  backbone.conv1.<c>.conv.weight / .norm.{weight,bias,_mean,_variance}
      c = conv1 | res_conv1 | conv1_1..3 (vd stem)
  backbone.res<s>.<block>.branch2{a,b,c}.conv.weight / .norm.*
  backbone.res<s>.<block>.short.conv.weight / .norm.*   (projection shortcut)
  backbone.res<s>.<block>.short.conv.conv.weight / ...  (vd: after the 2x2 avg-pool)
  backbone.res<s>.<block>.se.{squeeze,extract}.{weight,bias}   (SENet)
1.x ResNet: <block>_branch2a_weights, bn<block[3:]>_branch2a_scale / _offset / _mean /
_variance, <block>_branch1_*; stem conv1_weights, bn_conv1_*; vd stem conv1_1_weights,
bnv1_1_* (resnet.paddle_norm_name).
1.x SENet ('SEResNeXt' names): block res<s><x> -> n = f'{s + 2}_{index + 1}' (res4a,
res4b1, ... res4b35 -> 6_1 ... 6_36; res3a..res3h -> 5_1..5_8), convs conv<n>_x1/_x2/_x3,
shortcut conv<n>_prj, norms <conv>_bn_*, SE fcs fc<n>_sqz / fc<n>_exc _weights / _offset
(2.x Linear weights are [in, out] like 1.x fc weights); stem conv1_1_weights, conv1_1_bn_*.
FPN (ppdet.modeling.necks.fpn): neck.<layer>.weight / .bias -> <layer>_w / _b with the
same layer names (fpn_inner_res5_sum, fpn_inner_res4_sum_lateral, fpn_res4_sum, fpn_6).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

from detx.weights.ppdet2 import Rename

_BN_SUFFIX = {'weight': '_scale', 'bias': '_offset', '_mean': '_mean', '_variance': '_variance'}
_BRANCH = {'branch2a': 'x1', 'branch2b': 'x2', 'branch2c': 'x3', 'short': 'prj'}


@dataclasses.dataclass(frozen=True)
class Computed(Rename):
  """A rename whose 1.x name is computed from the match (`fn(match) -> name`), for names
  a format template cannot express (block indices, norm names)."""
  fn: Optional[Callable[[re.Match], str]] = None

  def apply(self, name: str) -> Optional[str]:
    m = re.fullmatch(self.pattern, name)
    return self.fn(m) if m else None


def _norm_name(conv: str, senet: bool) -> str:
  from detx.models.backbones.resnet import paddle_norm_name
  return f'{conv}_bn' if senet else paddle_norm_name(conv)


def _param(conv: str, kind: str, var: str, senet: bool) -> str:
  if kind == 'conv':
    return f'{conv}_weights'
  return _norm_name(conv, senet) + _BN_SUFFIX[var]


def block_index(label: str) -> int:
  """2.x/1.x ResNet block label -> index: 'a' -> 0, 'c' -> 2; stage 4 of depth >= 101:
  'a' -> 0, 'b7' -> 7."""
  if len(label) > 1:
    return int(label[1:])
  return ord(label) - ord('a')


_STEM = r'backbone\.conv1\.(?P<c>conv1(?:_[123])?|res_conv1)\.(?P<k>conv|norm)\.(?P<v>\w+)'
_LAYER = (r'backbone\.res(?P<s>[2-5])\.res[2-5](?P<x>[a-z]\d*)\.(?P<br>branch2[abc]|short)'
          r'(?:\.conv)?\.(?P<k>conv|norm)\.(?P<v>weight|bias|_mean|_variance)')
_SE = r'backbone\.res(?P<s>[2-5])\.res[2-5](?P<x>[a-z]\d*)\.se\.(?P<fc>squeeze|extract)\.(?P<v>weight|bias)'


def _resnet_layer(m):
  block = f'res{m["s"]}{m["x"]}'
  conv = f'{block}_{"branch1" if m["br"] == "short" else m["br"]}'
  return _param(conv, m['k'], m['v'], senet=False)


def _senet_block(m) -> str:
  return f'{int(m["s"]) + 2}_{block_index(m["x"]) + 1}'


def _senet_layer(m):
  conv = f'conv{_senet_block(m)}_{_BRANCH[m["br"]]}'
  return _param(conv, m['k'], m['v'], senet=True)


def _senet_se(m):
  fc = f'fc{_senet_block(m)}_{"sqz" if m["fc"] == "squeeze" else "exc"}'
  return fc + ('_weights' if m['v'] == 'weight' else '_offset')


RENAMES = {
    'resnet': [
        Computed(_STEM, '', fn=lambda m: _param(m['c'], m['k'], m['v'], senet=False)),
        Computed(_LAYER, '', fn=_resnet_layer),
    ],
    'senet': [
        Computed(_STEM, '', fn=lambda m: _param(m['c'], m['k'], m['v'], senet=True)),
        Computed(_LAYER, '', fn=_senet_layer),
        Computed(_SE, '', fn=_senet_se),
    ],
    'fpn': [
        Rename(r'neck\.(?P<p>fpn_[a-z0-9_]+)\.weight', '{p}_w'),
        Rename(r'neck\.(?P<p>fpn_[a-z0-9_]+)\.bias', '{p}_b'),
    ],
}
