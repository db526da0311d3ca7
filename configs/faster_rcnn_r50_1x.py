r"""Faster R-CNN ResNet50-C4, 1x (zoo row `faster_rcnn_r50_1x`); the base of every R-CNN config.

  python -m detx.main --config=configs/faster_rcnn_r50_1x.py --workdir=/tmp/frcnn_r50 \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 1 image, ImageNet-pretrained ResNet50): box AP 35.2.
Schedule (PADDLEDET_SPEC §3, "Faster/Mask C4 r50, r50_vd, r101"): 1 img/GPU x 8 = batch 8,
lr 0.01, 180k iterations, lr x0.1 at 120k and 160k, warmup 500 from 1/3, L2 1e-4,
momentum 0.9 (preset '1x_b8'). Other batch sizes: keep lr proportional to the batch
(--config.train.batch_size=16 --config.optim.base_lr=0.02 --config.train.steps=90000).
Smoke run on a CPU: --config.data.max_size=256 --config.train.steps=20 --config.data.train_limit=8
Small images keep few anchors (C4 at data.max_size 213: ~1.7k, against ~63k at 1333), so
the zoo's 2000 / 1000 proposals keep nearly every box NMS leaves; for small-image fits scale
model.rpn.train_post_nms_top_n / test_post_nms_top_n down (tests/test_overfit_rcnn.py: 128).
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.default()
  m = c.model
  m.name = 'faster_rcnn'
  m.num_classes = 80  # foreground classes; the heads add background (81 outputs)
  m.backbone = dict(depth=50, variant='b', norm='affine', freeze_norm=True, freeze_at=2)
  m.fpn = False
  m.anchor_sizes = (32.0, 64.0, 128.0, 256.0, 512.0)
  m.aspect_ratios = (0.5, 1.0, 2.0)
  m.anchor_scale = 0.0  # 0: 1 at the zoo's sizes, data.max_size / data.long_side below them
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
      resolution=14, sampling_ratio=0, hidden=1024, canonical_size=224.0, canonical_level=4)
  m.nms = dict(score_threshold=0.05, keep_top_k=100, nms_threshold=0.5, max_candidates=4096)

  c.data.name = 'coco'
  c.data.pipeline = 'rcnn'
  c.data.short_side = 800
  c.data.long_side = 1333
  c.data.max_boxes = 100
  c.data.with_masks = False
  c.data.mask_size = 112  # GT crops (Mask R-CNN); targets are resampled from them
  c.data.num_workers = 8
  c.eval.batch_size = 8

  c.train.batch_size = 8
  c.train.steps = 180000
  c.train.log_every = 20
  c.train.checkpoint_every = 10000
  c.eval.every = 20000
  c.optim.base_lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = schedules.schedule_config('1x_b8')
  return c
