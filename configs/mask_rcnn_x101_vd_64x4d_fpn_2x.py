r"""Mask R-CNN ResNeXt101-vd 64x4d-FPN, 2x (zoo row `mask_rcnn_x101_vd_64x4d_fpn_2x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 42.6, mask AP 37.6.

  python -m detx.main --config=configs/mask_rcnn_x101_vd_64x4d_fpn_2x.py --workdir=/tmp/mask_rcnn_x101_vd_64x4d_fpn_2x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  c.model.backbone.update(depth=101, variant='d', groups=64, group_width=4)
  base.set_schedule(c, '2x_b8', ref_warmup=1000, warmup_factor=0.1)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNeXt101_vd_64x4d_pretrained.tar'
  return c
