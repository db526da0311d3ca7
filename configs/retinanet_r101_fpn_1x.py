r"""RetinaNet ResNet101-FPN, 1x (zoo row `retinanet_r101_fpn_1x`).

  python -m detx.main --config=configs/retinanet_r101_fpn_1x.py --workdir=/tmp/retinanet_r101_fpn \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 2 images, ImageNet-pretrained ResNet101): box AP 37.3.
Schedule: as retinanet_r50_fpn_1x (PADDLEDET_SPEC §3, "RetinaNet r50/r101": batch 16,
lr 0.01, 90k, x0.1 at 60k / 80k, warmup 500 from 1/3, preset '1x').
"""
from detx import config as base


def get_config():
  c = base.load('retinanet_r50_fpn_1x')
  c.model.backbone.depth = 101
  return c
