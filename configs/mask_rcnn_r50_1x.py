r"""Mask R-CNN ResNet50-C4, 1x (zoo row `mask_rcnn_r50_1x`).

  python -m detx.main --config=configs/mask_rcnn_r50_1x.py --workdir=/tmp/mrcnn_r50 \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 1 image): box AP 36.5, mask AP 32.2.
Schedule: as faster_rcnn_r50_1x (batch 8, lr 0.01, 180k, x0.1 at 120k / 160k, preset '1x_b8').
Mask head: the box head's res5 output of the foreground RoIs -> 2x2 deconv (256) -> 1x1
to 81 classes, 14x14 masks.
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r50_1x')
  c.model.name = 'mask_rcnn'
  c.model.mask = dict(resolution=14, roi_resolution=14, num_convs=0, conv_dim=256)
  c.data.with_masks = True
  return c
