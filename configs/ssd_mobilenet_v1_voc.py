r"""SSD300 MobileNet-V1 on Pascal VOC, 120e (zoo row `ssd_mobilenet_v1_voc`).
Expected (PaddleDetection, from its COCO-trained SSD): VOC2007 test mAP@0.5 73.13.

  python -m detx.main --config=configs/ssd_mobilenet_v1_voc.py \
      --workdir=/tmp/ssd_mobilenet_v1_voc --config.data.dir=/path/to/voc
"""
from detx import config as base


def get_config():
  c = base.load('_base/ssd')
  c.model.zoo_pretrained = 'ssd_mobilenet_v1_coco_pretrained'  # the yml's pretrain_weights
  c.model.pretrained = ('https://paddlemodels.bj.bcebos.com/object_detection/'
                        f'{c.model.zoo_pretrained}.tar')
  return c
