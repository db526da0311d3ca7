r"""Faster R-CNN ResNet101-vd-FPN, 2x (zoo row `faster_rcnn_r101_vd_fpn_2x`).

  python -m detx.main --config=configs/faster_rcnn_r101_vd_fpn_2x.py --workdir=/tmp/faster_rcnn_r101_vd_fpn_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 40.8.
Schedule (PADDLEDET_SPEC §3, "Faster r101_vd_fpn 2x"): batch 8, lr 0.01, 360k iterations, x0.1
at 240k and 320k, warmup 1000 from 1/3 (preset '2x_b8'); lr proportional to the batch.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r101_vd_fpn_1x')
  c.train.steps = 360000
  c.optim.schedule = schedules.schedule_config('2x_b8')
  c.optim.schedule.ref_warmup = 1000
  return c
