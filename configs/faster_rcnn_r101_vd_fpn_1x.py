r"""Faster R-CNN ResNet101-vd-FPN, 1x (zoo row `faster_rcnn_r101_vd_fpn_1x`).

  python -m detx.main --config=configs/faster_rcnn_r101_vd_fpn_1x.py --workdir=/tmp/faster_rcnn_r101_vd_fpn_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 40.5.
Schedule (PADDLEDET_SPEC §3, "Faster r101_vd_fpn 1x"): batch 8, lr 0.01, 180k iterations, x0.1
at 120k and 160k, warmup 1000 (not 500) from 1/3 (preset '1x_b8'); lr proportional to the batch.
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r101_fpn_1x')
  c.model.backbone.variant = 'd'
  c.optim.schedule.ref_warmup = 1000
  return c
