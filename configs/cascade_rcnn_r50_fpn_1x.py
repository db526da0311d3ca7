r"""Cascade R-CNN ResNet50-FPN, 1x (zoo row `cascade_rcnn_r50_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 40.9.

  python -m detx.main --config=configs/cascade_rcnn_r50_fpn_1x.py --workdir=/tmp/cascade_rcnn_r50_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  return base.load('_base/cascade_rcnn')
