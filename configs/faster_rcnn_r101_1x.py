r"""Faster R-CNN ResNet101-C4, 1x (zoo row `faster_rcnn_r101_1x`).

  python -m detx.main --config=configs/faster_rcnn_r101_1x.py --workdir=/tmp/faster_rcnn_r101_1x \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 38.3.
Schedule: as faster_rcnn_r50_1x (batch 8, lr 0.01, 180k, x0.1 at 120k / 160k, preset '1x_b8').
The res5 box head has the backbone's depth (Paddle's ResNetC5.depth 101; its res5 has 3 blocks either way).
"""
from detx import config as base


def get_config():
  c = base.load('faster_rcnn_r50_1x')
  c.model.backbone.depth = 101
  return c
