r"""Mask R-CNN ResNet101-FPN, 1x (zoo row `mask_rcnn_r101_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 39.5, mask AP 35.2.

  python -m detx.main --config=configs/mask_rcnn_r101_fpn_1x.py --workdir=/tmp/mask_rcnn_r101_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  c.model.backbone.update(depth=101)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_pretrained.tar'
  return c
