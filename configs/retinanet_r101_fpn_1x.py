r"""RetinaNet ResNet101-FPN, 1x (zoo row `retinanet_r101_fpn_1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 37.3.

  python -m detx.main --config=configs/retinanet_r101_fpn_1x.py --workdir=/tmp/retinanet_r101_fpn_1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/retinanet')
  c.model.backbone.update(depth=101)
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_pretrained.tar'
  return c
