r"""SSD family base: SSD300 MobileNet-V1 on Pascal VOC (20 classes), PaddleDetection's
settings at the zoo's commit (configs/ssd_mobilenet_v1_voc.yml, ppdet/modeling/ops.py
MultiBoxHead / SSDOutputDecoder, data_feed.py SSDTrainFeed / SSDEvalFeed).

MobileNet-V1 (conv_group_scale 1, BatchNorm with norm_decay 0) with the four extra blocks;
backbone conv weights at lr x0.1 (conv_learning_rate). Multibox head on levels 4-9
(19, 10, 5, 3, 2, 1 at 300), priors min 60..285, max none/150..300, ratios [2] then
[2, 3] flipped, offset 0.5, no clip, variances 0.1/0.2. ssd_loss: bipartite + per-
prediction matching at 0.5, 3:1 max_negative mining. detection_output: NMS 0.45, score
0.01, nms_top_k 400, keep_top_k 200. RMSProp (rho 0.95, epsilon 1e-6, momentum 0; Paddle
1.5's defaults), L2 5e-5, lr 1e-3, 5e-4, 2.5e-4, 1e-4, 1e-5 at 10k, 15k, 20k, 25k of 28k
iterations ('120e'), batch 64 = 2 GPUs x 32 (each GPU's loss normalised by its own
positives: model.loss.group_images). Input 300x300, BGR, (x - 127.5) / 127.502231.
"""
from detx import config as base


def get_config():
  c = base.default()
  m = c.model
  m.name = 'ssd'
  m.num_classes = 20  # + background (the yml's num_classes 21)
  m.backbone.update(name='mobilenet', scale=1.0, norm='bn', freeze_norm=False,
                    extra_blocks=True, conv_learning_rate=0.1,
                    extra_filters=((256, 512), (128, 256), (128, 256), (64, 128)))
  m.prior = dict(base_size=300, min_ratio=20, max_ratio=90,  # ratios: unused, sizes given
                 min_sizes=(60.0, 105.0, 150.0, 195.0, 240.0, 285.0),
                 max_sizes=(0.0, 150.0, 195.0, 240.0, 285.0, 300.0),  # 0: Paddle's []
                 aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0),
                                (2.0, 3.0)),
                 flip=True, clip=False, offset=0.5, variances=(0.1, 0.1, 0.2, 0.2))
  m.loss = dict(overlap_threshold=0.5, neg_pos_ratio=3.0, neg_overlap=0.5, group_images=32)
  m.nms = dict(nms_threshold=0.45, nms_top_k=400, keep_top_k=200, score_threshold=0.01,
               max_candidates=-1)  # -1: Paddle's per-class kernel, no cap (nms_eta 1)

  # data.dir: the parent of VOCdevkit/; splits 'train' = 07+12 trainval, 'val' = 07 test
  c.data.name = 'voc'
  c.data.image_size = 300
  c.data.max_boxes = 64
  c.data.num_workers = 8
  c.eval.metric = 'voc'
  c.train.best_metric = 'voc/mAP'
  c.eval.map_type = '11point'
  c.eval.bbox_normalized = True  # Paddle's SSD is_bbox_normalized: VOC IoU without the +1
  c.eval.batch_size = 64
  c.train.batch_size = 64
  c.train.checkpoint_every = 2000  # the yml's snapshot_iter
  c.eval.every = 2000
  c.optim.update(name='rmsprop', rho=0.95, epsilon=1e-6, momentum=0.0, base_lr=0.001,
                 weight_decay=5e-5)
  return base.set_schedule(c, '120e')
