r"""RetinaNet family base: ResNet50-FPN (levels 3-7) on COCO 2017, PaddleDetection's
settings at the zoo's commit (configs/retinanet_r50_fpn_1x.yml).

Batch 16 (8 GPUs x 2 images), lr 0.01 (not 0.02: ZOO.md), 90k iterations, x0.1 at 60k
and 80k, warmup 500 from 1/3, L2 1e-4 (preset '1x'). Paddle trains RetinaNet with the
Faster R-CNN feeds (short side 800, long side 1333, flip), padded to a multiple of 128.
"""
from detx import config as base


def get_config():
  c = base.default()
  m = c.model
  m.name = 'retinanet'
  m.num_classes = 80  # foreground classes: sigmoid scores, no background
  m.backbone.update(name='resnet', depth=50, variant='b', norm='affine', freeze_norm=True,
                    freeze_at=2)
  m.pretrained = 'https://paddle-imagenet-models-name.bj.bcebos.com/ResNet50_cos_pretrained.tar'  # the ymls' ImageNet weights
  # P3-P5 from res3-5, P6 = conv on C5, P7 = conv on relu(P6)
  # extra_from='p5': PaddleDetection 2.x's P6 from P5 (docs/parity.md)
  m.neck.update(name='fpn', channels=256, min_level=3, max_level=7, extra_convs=True,
                extra_from='c5')
  m.head = dict(num_convs=4, channels=256, prior_prob=0.01)
  m.anchor = dict(base_scale=4.0, scales_per_octave=3, aspect_ratios=(1.0, 2.0, 0.5))
  m.target = dict(positive_overlap=0.5, negative_overlap=0.4)
  m.loss = dict(gamma=2.0, alpha=0.25, sigma=3.0151134457776365,
                group_images=2)  # images per GPU in the zoo: they share one fg count
  m.eval_pad_stride = 128  # eval im_info: the resized size padded to 128 (Paddle's PadBatch)
  m.nms = dict(score_threshold=0.05, pre_nms_top_n=1000, nms_threshold=0.5, keep_top_k=100)

  c.data.short_side = 800
  c.data.long_side = 1333
  c.data.pad_multiple = 128
  c.data.max_boxes = 100
  c.data.num_workers = 8
  c.eval.batch_size = 8
  c.train.batch_size = 16
  c.train.checkpoint_every = 10000
  c.eval.every = 20000
  c.optim.base_lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  return base.set_schedule(c, '1x')
