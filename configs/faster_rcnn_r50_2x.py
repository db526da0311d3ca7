r"""Faster R-CNN ResNet50-C4, 2x (zoo row `faster_rcnn_r50_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 37.1.

  python -m detx.main --config=configs/faster_rcnn_r50_2x.py --workdir=/tmp/faster_rcnn_r50_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn')
  base.set_schedule(c, '2x_b8')
  return c
