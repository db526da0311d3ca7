r"""Faster R-CNN family base: ResNet50 C4 (`get_config()` or 'c4') or ResNet50-FPN
(`get_config('fpn')`; 'fpn_b8': one image per GPU) on COCO 2017, PaddleDetection's settings at the zoo's commit
(configs/faster_rcnn_r50_1x.yml, faster_rcnn_r50_fpn_1x.yml). Zoo rows derive from it.

C4: batch 8 (8 GPUs x 1 image), lr 0.01, 180k iterations, x0.1 at 120k and 160k, warmup
500 from 1/3, L2 1e-4, momentum 0.9 (preset '1x_b8'); RoIAlign 14x14 with sampling 0,
res5 head; 12000/2000 proposals before/after NMS in training, 6000/1000 at test.
FPN: batch 16 (2 images per GPU), lr 0.02, 90k iterations (preset '1x'); levels 2-6,
2000/2000 and 1000/1000 proposals, collected over the 2 images of a GPU; RoIAlign 7x7
with sampling 2, two 1024-wide fc layers. 'fpn_b8': 1 image per GPU, so batch 8, lr 0.01,
180k iterations, x0.1 at 120k and 160k ('1x_b8'), proposals collected per image.
Both: short side 800, long side 1333, flip; affine (frozen BN) norms, freeze_at 2.
lr proportional to the batch (--config.train.batch_size=16 --config.optim.base_lr=0.02).
Small images keep few anchors (C4 at data.max_size 213: ~1.7k, against ~63k at 1333), so
the zoo's 2000 / 1000 proposals keep nearly every box NMS leaves; for small-image fits scale
model.rpn.train_post_nms_top_n / test_post_nms_top_n down (tests/test_overfit_rcnn.py: 128).
"""
from detx import config as base


def get_config(arch: str = 'c4'):
  if arch not in ('c4', 'fpn', 'fpn_b8'):
    raise ValueError(f"faster_rcnn base: arch must be 'c4', 'fpn' or 'fpn_b8', got {arch!r}")
  c = base.default()
  m = c.model
  m.name = 'faster_rcnn'
  m.num_classes = 80  # foreground classes; the heads add background (81 outputs)
  m.backbone.update(name='resnet', depth=50, variant='b', norm='affine', freeze_norm=True,
                    freeze_at=2)
  m.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet50_cos_pretrained.tar'  # the ymls' ImageNet weights
  m.neck.update(name='none', channels=256, min_level=2, max_level=6)
  m.anchor = dict(sizes=(32.0, 64.0, 128.0, 256.0, 512.0), aspect_ratios=(0.5, 1.0, 2.0))
  m.rpn = dict(
      batch_size_per_im=256, fg_fraction=0.5, positive_overlap=0.7, negative_overlap=0.3,
      straddle_thresh=0.0, nms_thresh=0.7, min_size=0.0,
      train_pre_nms_top_n=12000, train_post_nms_top_n=2000, train_collect_top_n=2000,
      test_pre_nms_top_n=6000, test_post_nms_top_n=1000, test_collect_top_n=1000,
      collect_images=1,   # images per GPU in the zoo (FPN: collect_fpn_proposals group)
      eval_pad_stride=0)  # eval im_info: C4 batches are not padded
  m.roi = dict(
      batch_size_per_im=512, fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5,
      bg_thresh_lo=0.0, bbox_reg_weights=(0.1, 0.1, 0.2, 0.2),
      resolution=14, sampling_ratio=0, hidden=1024, canonical_size=224.0, canonical_level=4,
      # PaddleDetection 2.x: aligned=True (half-pixel RoIAlign), pixel_offset=False (FPN
      # levels from the area, detected boxes decoded and clipped, without the +1 pixel);
      # the zoo's 1.x: False, True (docs/parity.md)
      aligned=False, pixel_offset=True)
  # max_candidates -1: every (box, class) pair over score_threshold goes to its class's NMS,
  # as Paddle's MultiClassNMS (nms_top_k -1); N > 0 would cap the pairs at the best N.
  m.nms = dict(score_threshold=0.05, keep_top_k=100, nms_threshold=0.5, max_candidates=-1)

  c.data.short_side = 800
  c.data.long_side = 1333
  c.data.max_boxes = 100
  c.data.num_workers = 8
  c.eval.batch_size = 8
  c.train.batch_size = 8
  c.train.checkpoint_every = 10000
  c.eval.every = 20000
  c.optim.base_lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  base.set_schedule(c, '1x_b8')
  if arch.startswith('fpn'):
    m.neck.name = 'fpn'
    m.anchor.sizes = (32.0,)  # P2; x2 per level up to 512 on P6, 3 ratios per location
    m.rpn.update(train_pre_nms_top_n=2000, test_pre_nms_top_n=1000, collect_images=2,
                 eval_pad_stride=32)
    m.roi.update(resolution=7, sampling_ratio=2)
    c.train.batch_size = 16
    c.optim.base_lr = 0.02
    base.set_schedule(c, '1x')
  if arch == 'fpn_b8':
    m.rpn.collect_images = 1
    c.train.batch_size = 8
    c.optim.base_lr = 0.01
    base.set_schedule(c, '1x_b8')
  return c
