r"""Mask R-CNN ResNet50-vd-FPN, 2x (zoo row `mask_rcnn_r50_vd_fpn_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 39.8, mask AP 35.4.

  python -m detx.main --config=configs/mask_rcnn_r50_vd_fpn_2x.py --workdir=/tmp/mask_rcnn_r50_vd_fpn_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  c.model.backbone.update(variant='d')
  base.set_schedule(c, '2x_b8')
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet50_vd_pretrained.tar'
  return c
