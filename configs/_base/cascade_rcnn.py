r"""Cascade R-CNN family base: the Faster R-CNN FPN base plus three box stages at IoU
0.5 / 0.6 / 0.7 (bbox_reg_weights 10 / 20 / 30, loss weights 1 / 0.5 / 0.25),
PaddleDetection's settings at the zoo's commit (configs/cascade_rcnn_r50_fpn_1x.yml):
batch 16, lr 0.02, 90k iterations, x0.1 at 60k and 80k (preset '1x').
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn', 'fpn')
  c.model.name = 'cascade_rcnn'
  c.model.cascade = dict(fg_thresholds=(0.5, 0.6, 0.7), reg_weights=(10.0, 20.0, 30.0),
                         loss_weights=(1.0, 0.5, 0.25),
                         # the stages' scores at evaluation: 'last' (the zoo: every stage's
                         # classifier on the stage-3 RoIs), 'own' (PaddleDetection 2.x: each
                         # stage on its own RoIs; docs/parity.md)
                         score_rois='last')
  return c
