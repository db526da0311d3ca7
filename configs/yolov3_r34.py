r"""YOLOv3 ResNet34, 270e (zoo row `yolov3_r34`).
Expected (PaddleDetection, ImageNet-pretrained ResNet34): box AP 36.2 at 608,
34.3 at --config.eval.size=416, 31.4 at 320.

  python -m detx.main --config=configs/yolov3_r34.py --workdir=/tmp/yolov3_r34 \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/yolov3')
  c.model.backbone.update(name='resnet', depth=34, variant='b')
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet34_pretrained.tar'
  return c
