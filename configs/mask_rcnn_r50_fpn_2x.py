r"""Mask R-CNN ResNet50-FPN, 2x (zoo row `mask_rcnn_r50_fpn_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.7, mask AP 34.7.

  python -m detx.main --config=configs/mask_rcnn_r50_fpn_2x.py --workdir=/tmp/mask_rcnn_r50_fpn_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  base.set_schedule(c, '2x_b8')
  return c
