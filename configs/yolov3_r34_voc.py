r"""YOLOv3 ResNet34 on Pascal VOC, 70k iterations (zoo row `yolov3_r34_voc`).
Expected (PaddleDetection, ImageNet-pretrained ResNet34): VOC2007 test mAP@0.5 (11point)
82.6 at 608, 81.9 at --config.eval.size=416, 80.1 at 320.

  python -m detx.main --config=configs/yolov3_r34_voc.py --workdir=/tmp/yolov3_r34_voc \
      --config.data.dir=/path/to/voc
"""
from detx import config as base


def get_config():
  c = base.load('_base/yolov3', 'voc')
  c.model.backbone.update(name='resnet', depth=34, variant='b')
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet34_pretrained.tar'
  return c
