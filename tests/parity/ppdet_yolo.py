"""ppdet side of tests/parity/test_yolo.py (runs in the ppdet venv; argv[1] = outdir).

Builds, for each case in spec['cases'], PaddleDetection 2.6's modules directly with the
zoo's arguments, draws random weights (ppdet_common.randomize, spec['seed']), runs them
in eval mode on outdir/input_<case>.npz['image'] (NCHW, written by the detx side) and
saves <case>.npz: the state dict under 'sd/<full 2.x name>' and the outputs under 'out/...'.

  darknet_yolo    DarkNet(53, C3-C5) + YOLOv3FPN + YOLOv3Head (80 classes)
  mobilenet_yolo  MobileNet(feature_maps [4, 6, 13]) + YOLOv3FPN + YOLOv3Head
  mobilenet_ssd   MobileNet(extra blocks, feature_maps [11, 13, 14, 15, 16, 17]) +
                  SSDHead (VOC: 20 classes, 1x1 convs, the zoo's prior sizes)
"""
import numpy as np
import paddle
from paddle import nn

from ppdet_common import read_spec, randomize, save


class Model(nn.Layer):
  """A container whose state_dict has the full-model prefixes ('backbone.', ...)."""

  def __init__(self, **parts):
    super().__init__()
    for name, layer in parts.items():
      setattr(self, name, layer)


def yolo(backbone, num_classes):
  from ppdet.modeling.heads.yolo_head import YOLOv3Head
  from ppdet.modeling.necks.yolo_fpn import YOLOv3FPN
  return Model(backbone=backbone, neck=YOLOv3FPN(in_channels=[256, 512, 1024]),
               yolo_head=YOLOv3Head(in_channels=[1024, 512, 256], num_classes=num_classes))


def run_yolo(model, image):
  feats = model.backbone({'image': image})
  outs = model.yolo_head(model.neck(feats))
  return {**{f'feat{i}': f for i, f in enumerate(feats)},
          **{f'head{i}': o for i, o in enumerate(outs)}}


def ssd(num_classes):
  from ppdet.modeling.backbones.mobilenet_v1 import MobileNet
  from ppdet.modeling.heads.ssd_head import SSDHead
  backbone = MobileNet(norm_type='bn', conv_learning_rate=0.1, with_extra_blocks=True,
                       feature_maps=[11, 13, 14, 15, 16, 17],
                       extra_block_filters=[[256, 512], [128, 256], [128, 256], [64, 128]])
  prior = dict(steps=[0.0] * 6, base_size=300, min_ratio=20, max_ratio=90,
               aspect_ratios=[[2.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0],
                              [2.0, 3.0]],
               min_sizes=[60.0, 105.0, 150.0, 195.0, 240.0, 285.0],
               max_sizes=[[], 150.0, 195.0, 240.0, 285.0, 300.0], offset=0.5, flip=True,
               clip=False)
  head = SSDHead(num_classes=num_classes, in_channels=[512, 1024, 512, 256, 256, 128],
                 anchor_generator=prior, kernel_size=1, padding=0)
  return Model(backbone=backbone, ssd_head=head)


def run_ssd(model, image):
  feats = model.backbone({'image': image})
  (boxes, scores), priors = model.ssd_head(feats, image)
  return {**{f'feat{i}': f for i, f in enumerate(feats)},
          'loc': paddle.concat(boxes, 1), 'conf': paddle.concat(scores, 1),
          'priors': paddle.concat(priors, 0)}


def build(case):
  from ppdet.modeling.backbones.darknet import DarkNet
  from ppdet.modeling.backbones.mobilenet_v1 import MobileNet
  if case == 'darknet_yolo':
    return yolo(DarkNet(depth=53, return_idx=[2, 3, 4]), 80), run_yolo
  if case == 'mobilenet_yolo':
    return yolo(MobileNet(norm_type='bn', feature_maps=[4, 6, 13]), 80), run_yolo
  if case == 'mobilenet_ssd':
    return ssd(20), run_ssd
  raise ValueError(case)


def main():
  spec, outdir = read_spec()
  paddle.set_device('cpu')
  for case in spec['cases']:
    model, run = build(case)
    # DarkNet53's residual sums grow ~3x a stage at the default std 0.05
    state = randomize(model, spec['seed'], std=0.02 if case == 'darknet_yolo' else 0.05)
    model.eval()
    image = paddle.to_tensor(np.load(outdir / f'input_{case}.npz')['image'])
    with paddle.no_grad():
      outs = run(model, image)
    save(outdir, case, **{f'sd/{k}': v for k, v in state.items()},
         **{f'out/{k}': v.numpy() for k, v in outs.items()})


if __name__ == '__main__':
  main()
