r"""Faster R-CNN SENet154-vd-FPN, s1x = 1.44x (zoo row `faster_rcnn_se154_vd_fpn_s1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 42.9.

  python -m detx.main --config=configs/faster_rcnn_se154_vd_fpn_s1x.py --workdir=/tmp/faster_rcnn_se154_vd_fpn_s1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/faster_rcnn', 'fpn_b8')
  c.model.backbone.update(name='senet', depth=152, variant='d', groups=64, group_width=4)
  base.set_schedule(c, 's1x')  # 260k iterations, x0.1 at 200k and 240k, warmup 1000 from 0.1
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/SE154_vd_pretrained.tar'
  return c
