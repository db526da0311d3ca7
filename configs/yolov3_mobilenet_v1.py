r"""YOLOv3 MobileNet-V1, 270e (zoo row `yolov3_mobilenet_v1`).
Expected (PaddleDetection, ImageNet-pretrained MobileNetV1): box AP 29.3 at 608,
29.3 at --config.eval.size=416, 27.1 at 320.

  python -m detx.main --config=configs/yolov3_mobilenet_v1.py --workdir=/tmp/yolov3_mobilenet_v1 \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/yolov3')
  c.model.backbone.update(name='mobilenet', scale=1.0, extra_blocks=False)
  c.model.pretrained = 'http://paddle-imagenet-models-name.bj.bcebos.com/MobileNetV1_pretrained.tar'
  return c
