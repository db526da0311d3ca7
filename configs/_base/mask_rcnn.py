r"""Mask R-CNN family base: the Faster R-CNN base (C4, or 'fpn' = Faster's 'fpn_b8')
plus the mask branch,
PaddleDetection's settings at the zoo's commit (configs/mask_rcnn_r50_1x.yml,
mask_rcnn_r50_fpn_1x.yml). Zoo rows derive from it.

C4: res5 reused for the masks, 14x14 masks; schedule as Faster C4 (batch 8, lr 0.01, 180k).
FPN: 4 convs + deconv on 14x14 RoIAlign features, 28x28 masks; 1 image per GPU, so
batch 8, lr 0.01, 180k iterations, x0.1 at 120k and 160k, warmup 500 from 1/3 ('1x_b8').
Mask targets are Paddle's generate_mask_labels: each instance's polygons rasterised in
its RoIs on the device (detx/ops/masks.py); max_points / max_polygons bound an instance's
polygons in the batch (more stops the input pipeline with the image's id).
"""
from detx import config as base


def get_config(arch: str = 'c4'):
  c = base.load('_base/faster_rcnn', 'fpn_b8' if arch == 'fpn' else arch)
  c.model.name = 'mask_rcnn'
  if arch == 'fpn':
    c.model.mask = dict(resolution=28, roi_resolution=14, num_convs=4, conv_dim=256,
                        max_points=1024, max_polygons=64)
  else:
    c.model.mask = dict(resolution=14, roi_resolution=14, num_convs=0, conv_dim=256,
                        max_points=1024, max_polygons=64)
  return c
