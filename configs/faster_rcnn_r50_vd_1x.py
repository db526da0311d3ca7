r"""Faster R-CNN ResNet50-vd-C4, 1x (zoo row `faster_rcnn_r50_vd_1x`).

  python -m detx.main --config=configs/faster_rcnn_r50_vd_1x.py --workdir=/tmp/faster_rcnn_r50_vd_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 36.4.
Schedule: as faster_rcnn_r50_1x (batch 8, lr 0.01, 180k, x0.1 at 120k / 160k, preset '1x_b8').
ResNet-D: three-conv stem and avg-pool shortcuts, also in the res5 box head.
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r50_1x')
  c.model.backbone.variant = 'd'
  return c
