"""PaddleDetection 2.x -> 1.x names (see detx.weights.ppdet2) for DarkNet53, MobileNet-V1
(with SSD's extra blocks), the YOLOv3 neck + head and the SSD head.

2.x (ppdet 2.6 state_dict, full model)            1.x (the zoo's names, detx's rules)
  backbone.conv0.conv.weight                        yolo_input.conv.weights
  backbone.downsample0.conv_bn_layer.*              yolo_input.downsample.*
  backbone.stage.S.basicblock0.conv{1,2}.*          stage.S.0.{0,1}.*
  backbone.stage.S.stage.S.B.conv{1,2}.*            stage.S.B.{0,1}.*
  backbone.stage.S.downsample.conv_bn_layer.*       stage.S.downsample.*
  <darknet conv>.batch_norm.weight|bias|_mean|_variance -> .bn.scale|offset|mean|var
  neck.yolo_block.I.conv_module.conv{0,1,2,3}.*     yolo_block.I.{0.0,0.1,1.0,1.1}.*
  neck.yolo_block.I.conv_module.route.*             yolo_block.I.2.*
  neck.yolo_block.I.tip.* / neck.yolo_transition.I.*  yolo_block.I.tip.* / yolo_transition.I.*
  yolo_head.yolo_output.I.weight|bias               yolo_output.I.conv.weights|bias
  backbone.conv1._conv.weight, ._batch_norm.*       conv1_weights, conv1_bn_scale|offset|mean|variance
  backbone.B._depthwise_conv.* / ._pointwise_conv.*  B_dw_* / B_sep_*   (B = conv2_1 .. conv6)
  backbone.conv7_K.pointwise_conv.* / .normal_conv.*  conv7_K_extra1_* / conv7_K_extra2_*
  ssd_head.boxesI.weight|bias / ssd_head.scoresI.*  conv2d_{35+2I}.w_0|b_0 / conv2d_{36+2I}.*

The arrays need no transform: same layouts (OIHW), same channel order per anchor
([tx, ty, tw, th, obj, classes] for YOLO; background first in SSD's class scores).
"""
from detx.weights.ppdet2 import Rename

# DarkNet-style conv + BN ('.conv.weights', '.bn.scale' ...), 2.x suffix -> 1.x suffix.
_DARK = (('conv.weight', 'conv.weights'), ('batch_norm.weight', 'bn.scale'),
         ('batch_norm.bias', 'bn.offset'), ('batch_norm._mean', 'bn.mean'),
         ('batch_norm._variance', 'bn.var'))
# MobileNet's ConvBNLayer ('_weights', '_bn_scale' ...).
_MOBILE = (('_conv.weight', 'weights'), ('_batch_norm.weight', 'bn_scale'),
           ('_batch_norm.bias', 'bn_offset'), ('_batch_norm._mean', 'bn_mean'),
           ('_batch_norm._variance', 'bn_variance'))
_N = r'(?P<{}>\d+)'


def _darknet_conv(pattern: str, template: str) -> list:
  """The five Renames of one DarkNet-style conv + BN layer."""
  return [Rename(pattern + r'\.' + new.replace('.', r'\.'), template + '.' + old)
          for new, old in _DARK]


def _mobile_conv(pattern: str, template: str) -> list:
  return [Rename(pattern + r'\.' + new.replace('.', r'\.'), template + '_' + old)
          for new, old in _MOBILE]


_S, _B, _I = _N.format('s'), _N.format('b'), _N.format('i')

DARKNET = (_darknet_conv(r'backbone\.conv0', 'yolo_input')
           + _darknet_conv(r'backbone\.downsample0\.conv_bn_layer', 'yolo_input.downsample')
           + _darknet_conv(rf'backbone\.stage\.{_S}\.downsample\.conv_bn_layer',
                           'stage.{s}.downsample')
           + _darknet_conv(rf'backbone\.stage\.{_S}\.basicblock0\.conv1', 'stage.{s}.0.0')
           + _darknet_conv(rf'backbone\.stage\.{_S}\.basicblock0\.conv2', 'stage.{s}.0.1')
           + _darknet_conv(rf'backbone\.stage\.{_S}\.stage\.(?P=s)\.{_B}\.conv1',
                           'stage.{s}.{b}.0')
           + _darknet_conv(rf'backbone\.stage\.{_S}\.stage\.(?P=s)\.{_B}\.conv2',
                           'stage.{s}.{b}.1'))

YOLO_HEAD = ([r for k, t in enumerate(('0.0', '0.1', '1.0', '1.1', '2'))
              for r in _darknet_conv(
                  rf'neck\.yolo_block\.{_I}\.conv_module\.' + (f'conv{k}' if k < 4 else 'route'),
                  'yolo_block.{i}.' + t)]
             + _darknet_conv(rf'neck\.yolo_block\.{_I}\.tip', 'yolo_block.{i}.tip')
             + _darknet_conv(rf'neck\.yolo_transition\.{_I}', 'yolo_transition.{i}')
             + [Rename(rf'yolo_head\.yolo_output\.{_I}\.weight', 'yolo_output.{i}.conv.weights'),
                Rename(rf'yolo_head\.yolo_output\.{_I}\.bias', 'yolo_output.{i}.conv.bias')])

_BLOCK = r'(?P<b>conv\d_\d|conv6)'
MOBILENET = (_mobile_conv(r'backbone\.conv1', 'conv1')
             + _mobile_conv(rf'backbone\.{_BLOCK}\._depthwise_conv', '{b}_dw')
             + _mobile_conv(rf'backbone\.{_BLOCK}\._pointwise_conv', '{b}_sep')
             + _mobile_conv(r'backbone\.(?P<b>conv7_\d)\.pointwise_conv', '{b}_extra1')
             + _mobile_conv(r'backbone\.(?P<b>conv7_\d)\.normal_conv', '{b}_extra2'))

# SSD's multibox convs: fluid's automatic names in the zoo (detx.models.heads.ssd).
SSD_FIRST_CONV = 35
SSD_HEAD = [Rename(rf'ssd_head\.{kind}{i}\.{p2}', f'conv2d_{SSD_FIRST_CONV + 2 * i + j}.{p1}')
            for i in range(6) for j, kind in enumerate(('boxes', 'scores'))
            for p2, p1 in (('weight', 'w_0'), ('bias', 'b_0'))]

RENAMES = {'darknet': DARKNET, 'mobilenet': MOBILENET, 'yolo_head': YOLO_HEAD,
           'ssd_head': SSD_HEAD}
