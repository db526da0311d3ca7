r"""Faster R-CNN ResNet50-FPN, 1x (zoo row `faster_rcnn_r50_fpn_1x`); the base of the FPN configs.

  python -m detx.main --config=configs/faster_rcnn_r50_fpn_1x.py --workdir=/tmp/frcnn_r50_fpn \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 2 images, ImageNet-pretrained ResNet50): box AP 37.2.
Schedule (PADDLEDET_SPEC §3, "Faster r50_fpn 1x"): 2 img/GPU x 8 = batch 16, lr 0.02,
90k iterations, x0.1 at 60k and 80k, warmup 500 from 1/3, L2 1e-4 (preset '1x').
lr proportional to the batch: batch 8 -> lr 0.01, 180k steps.
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r50_1x')
  m = c.model
  m.fpn = True
  m.anchor_sizes = (32.0,)  # P2; x2 per level up to 512 on P6, 3 ratios per location
  m.rpn.update(train_pre_nms_top_n=2000, train_post_nms_top_n=2000, train_collect_top_n=2000,
               test_pre_nms_top_n=1000, test_post_nms_top_n=1000, test_collect_top_n=1000,
               collect_images=2, eval_pad_stride=32)
  m.roi.update(resolution=7, sampling_ratio=2)

  c.train.batch_size = 16
  c.train.steps = 90000
  c.optim.base_lr = 0.02
  c.optim.schedule = schedules.schedule_config('1x')
  return c
