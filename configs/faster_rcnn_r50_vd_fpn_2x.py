r"""Faster R-CNN ResNet50-vd-FPN, 2x (zoo row `faster_rcnn_r50_vd_fpn_2x`).

  python -m detx.main --config=configs/faster_rcnn_r50_vd_fpn_2x.py --workdir=/tmp/faster_rcnn_r50_vd_fpn_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.9.
Schedule: as faster_rcnn_r50_fpn_2x (batch 16, lr 0.02, 180k, x0.1 at 120k / 160k, preset '2x').
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r50_fpn_2x')
  c.model.backbone.variant = 'd'
  return c
