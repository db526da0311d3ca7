r"""Mask R-CNN ResNet50-FPN, 1x (zoo row `mask_rcnn_r50_fpn_1x`); the base of the FPN Mask configs.

  python -m detx.main --config=configs/mask_rcnn_r50_fpn_1x.py --workdir=/tmp/mrcnn_r50_fpn \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 1 image): box AP 37.9, mask AP 34.2.
Schedule (PADDLEDET_SPEC §3, "Mask r50_fpn 1x"): 1 img/GPU x 8 = batch 8, lr 0.01, 180k
iterations, x0.1 at 120k and 160k, warmup 500 from 1/3, L2 1e-4 (preset '1x_b8').
lr proportional to the batch: batch 16 -> lr 0.02, 90k steps.
Mask head: 4 convs + deconv on 14x14 RoIAlign features, 28x28 masks (resampled from the
data pipeline's 112x112 GT crops, data.mask_size).
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r50_fpn_1x')
  c.model.name = 'mask_rcnn'
  c.model.mask = dict(resolution=28, roi_resolution=14, num_convs=4, conv_dim=256)
  c.model.rpn.collect_images = 1
  c.data.with_masks = True

  c.train.batch_size = 8
  c.train.steps = 180000
  c.optim.base_lr = 0.01
  c.optim.schedule = schedules.schedule_config('1x_b8')
  return c
