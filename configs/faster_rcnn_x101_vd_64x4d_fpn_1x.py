r"""Faster R-CNN ResNeXt101-vd 64x4d-FPN, 1x (zoo row `faster_rcnn_x101_vd_64x4d_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 42.2.

  python -m detx.main --config=configs/faster_rcnn_x101_vd_64x4d_fpn_1x.py --workdir=/tmp/faster_rcnn_x101_vd_64x4d_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn', 'fpn_b8')
  c.model.backbone.update(depth=101, variant='d', groups=64, group_width=4)
  base.set_schedule(c, '1x_b8', ref_warmup=1000, warmup_factor=0.1)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNeXt101_vd_64x4d_pretrained.tar'
  return c
