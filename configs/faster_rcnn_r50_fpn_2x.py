r"""Faster R-CNN ResNet50-FPN, 2x (zoo row `faster_rcnn_r50_fpn_2x`).

  python -m detx.main --config=configs/faster_rcnn_r50_fpn_2x.py --workdir=/tmp/faster_rcnn_r50_fpn_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 37.7.
Schedule (PADDLEDET_SPEC §3, "Faster r50_fpn 2x"): batch 16 (2 img/GPU x 8), lr 0.02, 180k
iterations, x0.1 at 120k and 160k, warmup 500 from 1/3 (preset '2x'); lr proportional to the batch.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r50_fpn_1x')
  c.train.steps = 180000
  c.optim.schedule = schedules.schedule_config('2x')
  return c
