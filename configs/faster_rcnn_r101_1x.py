r"""Faster R-CNN ResNet101-C4, 1x (zoo row `faster_rcnn_r101_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.3.

  python -m detx.main --config=configs/faster_rcnn_r101_1x.py --workdir=/tmp/faster_rcnn_r101_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn')
  c.model.backbone.update(depth=101)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_pretrained.tar'
  return c
