r"""Mask R-CNN SENet154-vd-FPN, s1x = 1.44x (zoo row `mask_rcnn_se154_vd_fpn_s1x`).
Expected (PaddleDetection, ImageNet-pretrained backbone): box AP 44.0, mask AP 38.7.

  python -m detx.main --config=configs/mask_rcnn_se154_vd_fpn_s1x.py --workdir=/tmp/mask_rcnn_se154_vd_fpn_s1x \
      --config.data.dir=/path/to/coco
"""
from detx import config as base


def get_config():
  c = base.load('_base/mask_rcnn', 'fpn')
  c.model.backbone.update(name='senet', depth=152, variant='d', groups=64, group_width=4)
  base.set_schedule(c, 's1x')  # 260k iterations, x0.1 at 200k and 240k, warmup 1000 from 0.1
  c.model.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/SE154_vd_pretrained.tar'
  return c
