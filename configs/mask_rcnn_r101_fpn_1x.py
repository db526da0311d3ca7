r"""Mask R-CNN ResNet101-FPN, 1x (zoo row `mask_rcnn_r101_fpn_1x`).

  python -m detx.main --config=configs/mask_rcnn_r101_fpn_1x.py --workdir=/tmp/mask_rcnn_r101_fpn_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 39.5, mask AP 35.2.
Schedule: as mask_rcnn_r50_fpn_1x (batch 8, lr 0.01, 180k, x0.1 at 120k / 160k, preset '1x_b8').
"""
from detx import config as base


def get_config():
  c = base.load('mask_rcnn_r50_fpn_1x')
  c.model.backbone.depth = 101
  return c
