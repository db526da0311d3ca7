r"""YOLOv3 DarkNet53 on COCO 2017, the 270e schedule (zoo row `yolov3_darknet`).

  python -m detx.main --config=configs/yolov3_darknet.py --workdir=/tmp/yolov3 \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 8 images, ImageNet-pretrained DarkNet53):
box AP 38.9 at 608, 37.5 at --config.eval.size=416, 34.8 at 320.
Smoke run on a CPU: --config.data.max_size=256 --config.train.steps=20 --config.data.train_limit=16
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.default()
  c.model.name = 'yolov3'
  c.model.backbone = 'darknet53'
  c.model.num_classes = 80
  c.model.depths = (1, 2, 8, 8, 4)
  c.model.width = 1.0
  c.model.anchors = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                     (116, 90), (156, 198), (373, 326))
  c.model.anchor_masks = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
  c.model.ignore_thresh = 0.7
  c.model.label_smooth = True
  c.model.conf_thresh = 0.01
  c.model.nms = dict(score_threshold=0.01, nms_top_k=1000, keep_top_k=100, nms_threshold=0.45)

  c.data.name = 'coco'
  c.data.max_boxes = 50
  c.data.train_sizes = tuple(range(320, 609, 32))
  c.data.mixup_epochs = 250
  c.data.num_workers = 8
  c.eval.size = 608
  c.eval.batch_size = 8

  c.train.batch_size = 64
  c.train.steps = 500200
  c.train.log_every = 20
  c.train.checkpoint_every = 10000
  c.eval.every = 10000
  c.optim.base_lr = 0.001
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = schedules.schedule_config('270e')
  return c
