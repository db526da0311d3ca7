r"""RetinaNet ResNet50-FPN, 1x (zoo row `retinanet_r50_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 36.0.

  python -m detx.main --config=configs/retinanet_r50_fpn_1x.py --workdir=/tmp/retinanet_r50_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  return base.load('_base/retinanet')
