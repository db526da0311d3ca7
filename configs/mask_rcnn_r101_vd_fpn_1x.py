r"""Mask R-CNN ResNet101-vd-FPN, 1x (zoo row `mask_rcnn_r101_vd_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 41.4, mask AP 36.8.

  python -m detx.main --config=configs/mask_rcnn_r101_vd_fpn_1x.py --workdir=/tmp/mask_rcnn_r101_vd_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  c.model.backbone.update(depth=101, variant='d')
  base.set_schedule(c, '1x_b8', ref_warmup=1000, warmup_factor=0.1)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_vd_pretrained.tar'
  return c
