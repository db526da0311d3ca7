r"""Cascade R-CNN ResNet50-FPN, 1x (zoo row `cascade_rcnn_r50_fpn_1x`).

  python -m detx.main --config=configs/cascade_rcnn_r50_fpn_1x.py --workdir=/tmp/cascade_r50_fpn \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 2 images): box AP 40.9.
Schedule: as faster_rcnn_r50_fpn_1x (batch 16, lr 0.02, 90k, x0.1 at 60k / 80k, preset '1x').
Three stages at IoU 0.5 / 0.6 / 0.7, class-agnostic regression with bbox_reg_weights
10 / 20 / 30 (variances [1/w, 1/w, 2/w, 2/w]), loss weights 1 / 0.5 / 0.25 and head lr x1 / x2 / x4.
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r50_fpn_1x')
  c.model.name = 'cascade_rcnn'
  c.model.cascade = dict(fg_thresholds=(0.5, 0.6, 0.7), reg_weights=(10.0, 20.0, 30.0),
                         loss_weights=(1.0, 0.5, 0.25))
  return c
