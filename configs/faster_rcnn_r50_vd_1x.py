r"""Faster R-CNN ResNet50-vd-C4, 1x (zoo row `faster_rcnn_r50_vd_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 36.4.

  python -m detx.main --config=configs/faster_rcnn_r50_vd_1x.py --workdir=/tmp/faster_rcnn_r50_vd_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn')
  c.model.backbone.update(variant='d')
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet50_vd_pretrained.tar'
  return c
