r"""Mask R-CNN ResNet50-FPN, 2x (zoo row `mask_rcnn_r50_fpn_2x`).

  python -m detx.main --config=configs/mask_rcnn_r50_fpn_2x.py --workdir=/tmp/mask_rcnn_r50_fpn_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.7, mask AP 34.7.
Schedule (PADDLEDET_SPEC §3, "Mask r50_fpn 2x"): batch 8 (1 img/GPU x 8), lr 0.01, 360k
iterations, x0.1 at 240k and 320k, warmup 500 from 1/3 (preset '2x_b8'); lr proportional to the batch.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('mask_rcnn_r50_fpn_1x')
  c.train.steps = 360000
  c.optim.schedule = schedules.schedule_config('2x_b8')
  return c
