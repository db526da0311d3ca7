r"""YOLOv3 DarkNet53, 270e (zoo row `yolov3_darknet`).
Expected (PaddleDetection, ImageNet-pretrained DarkNet53): box AP 38.9 at 608,
37.5 at --config.eval.size=416, 34.8 at 320.

  python -m detx.main --config=configs/yolov3_darknet.py --workdir=/tmp/yolov3_darknet \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  return base.load('_base/yolov3')
