r"""YOLOv3 DarkNet53 on Pascal VOC, 70k iterations (zoo row `yolov3_darknet_voc`).
Expected (PaddleDetection, ImageNet-pretrained DarkNet53): VOC2007 test mAP@0.5 (11point)
83.5 at 608, 83.6 at --config.eval.size=416, 82.2 at 320.

  python -m detx.main --config=configs/yolov3_darknet_voc.py --workdir=/tmp/yolov3_darknet_voc \
      --config.data.dir=/path/to/voc  # holds VOCdevkit/VOC2007 and VOCdevkit/VOC2012
"""
from detx import config as base


def get_config():
  return base.load('_base/yolov3', 'voc')
