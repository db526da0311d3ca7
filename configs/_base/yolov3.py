r"""YOLOv3 family base: DarkNet53 on COCO 2017 with the 270e schedule, PaddleDetection's
settings at the zoo's commit (configs/yolov3_darknet.yml). Zoo rows derive from it.

Batch 64 (8 GPUs x 8 images), lr 0.001, 500.2k iterations, x0.1 at 400k and 450k, warmup
4000 from 0, L2 5e-4, momentum 0.9; multi-scale training 320..608 (step 32), mixup for
the first 250 epochs, label smoothing; test at 608. Every YOLOv3 yml trains its whole
backbone with (sync) BatchNorm: norm 'sync_bn', freeze_norm False, freeze_at 0 (DarkNet
ignores these keys; yolov3_r34.yml states them, MobileNet has no freezing).

get_config('voc') is the *_voc.yml rows' base: Pascal VOC (data.dir the parent of
VOCdevkit/; train on 07+12 trainval, evaluate on 07 test), 20 classes, label_smooth
false, metric VOC (11point mAP@0.5), 70k iterations x0.1 at 55k and 62k, warmup 1000
from 0 (the yolo_voc preset); every other number as COCO's.
"""
from detx import config as base

COCO_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                (116, 90), (156, 198), (373, 326))


def get_config(dataset='coco'):
  c = base.default()
  m = c.model
  m.name = 'yolov3'
  m.num_classes = 80
  # The YOLO head is scaled with the backbone's width (the quickstart's narrow model).
  m.backbone.update(name='darknet', depths=(1, 2, 8, 8, 4), width=1.0, norm='sync_bn',
                    freeze_norm=False, freeze_at=0)
  m.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/DarkNet53_pretrained.tar'  # the ymls' ImageNet weights
  m.anchors = COCO_ANCHORS  # (w, h) in input pixels at 608
  m.anchor_masks = ((6, 7, 8), (3, 4, 5), (0, 1, 2))  # stride 32 gets the largest
  m.ignore_thresh = 0.7
  m.label_smooth = True
  m.conf_thresh = 0.01
  m.nms = dict(score_threshold=0.01, nms_top_k=1000, keep_top_k=100, nms_threshold=0.45)

  c.data.max_boxes = 50
  # Multi-scale as Paddle's: random interpolation to 608, then nearest to a size drawn
  # from these, one per 8 images as Paddle drew one per device batch of 8 (the groups
  # run as micro-steps; README "YOLOv3 input sizes"). eval.sizes=(608, 416, 320) gives
  # the zoo's three columns.
  c.data.train_sizes = tuple(range(320, 609, 32))
  c.data.size_group = 8
  c.data.mixup_epochs = 250
  c.data.num_workers = 8
  c.eval.size = 608
  c.eval.batch_size = 8

  c.train.batch_size = 64
  c.train.checkpoint_every = 10000
  c.eval.every = 10000
  c.optim.base_lr = 0.001
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  if dataset == 'voc':
    m.num_classes, m.label_smooth = 20, False
    c.data.name, c.eval.metric, c.train.best_metric = 'voc', 'voc', 'voc/mAP'
    return base.set_schedule(c, 'yolo_voc')
  return base.set_schedule(c, '270e')
