r"""Faster R-CNN ResNet101-vd-FPN, 2x (zoo row `faster_rcnn_r101_vd_fpn_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 40.8.

  python -m detx.main --config=configs/faster_rcnn_r101_vd_fpn_2x.py --workdir=/tmp/faster_rcnn_r101_vd_fpn_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn', 'fpn_b8')
  c.model.backbone.update(depth=101, variant='d')
  base.set_schedule(c, '2x_b8', ref_warmup=1000)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_vd_pretrained.tar'
  return c
