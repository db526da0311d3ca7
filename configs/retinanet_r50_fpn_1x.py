r"""RetinaNet ResNet50-FPN, 1x (zoo row `retinanet_r50_fpn_1x`); the base of the RetinaNet configs.

  python -m detx.main --config=configs/retinanet_r50_fpn_1x.py --workdir=/tmp/retinanet_r50_fpn \
      --config.data.dir=/path/to/coco

Expected (PaddleDetection, 8 GPUs x 2 images, ImageNet-pretrained ResNet50): box AP 36.0.
Schedule (PADDLEDET_SPEC §3, "RetinaNet r50/r101"): 2 img/GPU x 8 = batch 16, lr 0.01 (not
0.02: ZOO.md), 90k iterations, x0.1 at 60k and 80k, warmup 500 from 1/3, L2 1e-4 (preset
'1x'); lr proportional to the batch.
Paddle trains RetinaNet with the Faster R-CNN feeds (800/1333, flip), padded to a multiple
of 128, so this config starts from faster_rcnn_r50_1x's data and optimizer settings and
replaces the model.
Smoke run on a CPU: --config.data.max_size=256 --config.train.steps=20 --config.data.train_limit=8
"""
from detx import config as base
from detx import schedules


def get_config():
  c = base.load('faster_rcnn_r50_1x')
  c.model = m = base.default().model  # the generic model keys; R-CNN's rpn/roi do not apply
  m.name = 'retinanet'
  m.num_classes = 80  # foreground classes: sigmoid scores, no background
  m.backbone = dict(depth=50, variant='b', norm='affine', freeze_norm=True, freeze_at=2)
  m.head = dict(num_convs=4, channels=256, prior_prob=0.01)
  m.anchor = dict(base_scale=4.0, scales_per_octave=3, aspect_ratios=(1.0, 2.0, 0.5))
  m.anchor_scale = 0.0  # 0: 1 at the zoo's sizes, data.max_size / data.long_side below them
  m.target = dict(positive_overlap=0.5, negative_overlap=0.4)
  m.loss = dict(gamma=2.0, alpha=0.25, sigma=3.0151134457776365,
                group_images=2)  # images per GPU in the zoo: they share one fg count
  m.eval_pad_stride = 128  # eval im_info: the resized size padded to 128 (Paddle's PadBatch)
  m.nms = dict(score_threshold=0.05, pre_nms_top_n=1000, nms_threshold=0.5, keep_top_k=100)
  c.data.pad_multiple = 128

  c.train.batch_size = 16
  c.train.steps = 90000
  c.optim.base_lr = 0.01
  c.optim.schedule = schedules.schedule_config('1x')
  return c
