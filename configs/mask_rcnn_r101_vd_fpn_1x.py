r"""Mask R-CNN ResNet101-vd-FPN, 1x (zoo row `mask_rcnn_r101_vd_fpn_1x`).

  python -m detx.main --config=configs/mask_rcnn_r101_vd_fpn_1x.py --workdir=/tmp/mask_rcnn_r101_vd_fpn_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 41.4, mask AP 36.8.
Schedule (PADDLEDET_SPEC §3, "Mask r101_vd_fpn 1x"): batch 8, lr 0.01, 180k iterations, x0.1
at 120k and 160k, warmup 1000 from 0.1 (preset '1x_b8'); lr proportional to the batch.
"""
from detx import config as base


def get_config():
  c = base.load('mask_rcnn_r101_fpn_1x')
  c.model.backbone.variant = 'd'
  c.optim.schedule.ref_warmup = 1000
  c.optim.schedule.warmup_factor = 0.1
  return c
