r"""Faster R-CNN ResNet101-FPN, 1x (zoo row `faster_rcnn_r101_fpn_1x`).

  python -m detx.main --config=configs/faster_rcnn_r101_fpn_1x.py --workdir=/tmp/faster_rcnn_r101_fpn_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.7.
Schedule (PADDLEDET_SPEC §3, "Faster r101_fpn 1x"): batch 8 (1 img/GPU x 8), lr 0.01, 180k
iterations, x0.1 at 120k and 160k, warmup 500 from 1/3 (preset '1x_b8'); lr proportional to the batch.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r50_fpn_1x')
  c.model.backbone.depth = 101
  c.model.rpn.collect_images = 1
  c.train.batch_size = 8
  c.train.steps = 180000
  c.optim.base_lr = 0.01
  c.optim.schedule = schedules.schedule_config('1x_b8')
  return c
