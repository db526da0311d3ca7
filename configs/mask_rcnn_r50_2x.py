r"""Mask R-CNN ResNet50-C4, 2x (zoo row `mask_rcnn_r50_2x`).

  python -m detx.main --config=configs/mask_rcnn_r50_2x.py --workdir=/tmp/mask_rcnn_r50_2x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.2, mask AP 33.4.
Schedule (PADDLEDET_SPEC §3, "C4 2x"): batch 8, lr 0.01, 360k iterations, x0.1 at 240k
and 320k, warmup 500 from 1/3 (preset '2x_b8'); lr proportional to the batch.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('mask_rcnn_r50_1x')
  c.train.steps = 360000
  c.optim.schedule = schedules.schedule_config('2x_b8')
  return c
