r"""Mask R-CNN ResNet50-FPN, 1x (zoo row `mask_rcnn_r50_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 37.9, mask AP 34.2.

  python -m detx.main --config=configs/mask_rcnn_r50_fpn_1x.py --workdir=/tmp/mask_rcnn_r50_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  return base.load('_base/mask_rcnn', 'fpn')
