r"""Faster R-CNN ResNet50-vd-FPN, 2x (zoo row `faster_rcnn_r50_vd_fpn_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.9.

  python -m detx.main --config=configs/faster_rcnn_r50_vd_fpn_2x.py --workdir=/tmp/faster_rcnn_r50_vd_fpn_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn', 'fpn')
  c.model.backbone.update(variant='d')
  base.set_schedule(c, '2x')
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet50_vd_pretrained.tar'
  return c
