r"""YOLOv3 MobileNet-V1 on Pascal VOC, 70k iterations (zoo row `yolov3_mobilenet_v1_voc`).
Expected (PaddleDetection, ImageNet-pretrained MobileNetV1): VOC2007 test mAP@0.5
(11point) 76.2 at 608, 76.7 at --config.eval.size=416, 75.3 at 320.

  python -m detx.main --config=configs/yolov3_mobilenet_v1_voc.py \
      --workdir=/tmp/yolov3_mobilenet_v1_voc --config.data.dir=/path/to/voc
"""
from detx import config as base


def get_config():
  c = base.load('_base/yolov3', 'voc')
  c.model.backbone.update(name='mobilenet', scale=1.0, extra_blocks=False)
  c.model.pretrained = 'http://paddle-imagenet-models-name.bj.bcebos.com/MobileNetV1_pretrained.tar'
  return c
