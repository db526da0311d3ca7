r"""Mask R-CNN ResNet50-vd-FPN, 2x (zoo row `mask_rcnn_r50_vd_fpn_2x`).

  python -m detx.main --config=configs/mask_rcnn_r50_vd_fpn_2x.py --workdir=/tmp/mask_rcnn_r50_vd_fpn_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 39.8, mask AP 35.4.
Schedule: as mask_rcnn_r50_fpn_2x (batch 8, lr 0.01, 360k, x0.1 at 240k / 320k, preset '2x_b8').
"""
from detx import config as base


def get_config():
  c = base.load('mask_rcnn_r50_fpn_2x')
  c.model.backbone.variant = 'd'
  return c
