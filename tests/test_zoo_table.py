"""Every zoo config against the values PaddleDetection trained it with.

ZOO holds, per configs/*.py row, the numbers transcribed by hand from PaddleDetection
597145c20853d265f90585272a935dd5deb1bf7a (2019-07-29; docs/MODEL_ZOO_cn.md is the zoo
page): configs/<row>.yml, and where the yml is silent, the code defaults it falls back
on (ppdet/data/data_feed.py, ppdet/modeling/...). The trailing comment of each entry
says where it came from. `batch` is the global batch: yml images/GPU x the zoo's 8 GPUs.
The expected side is literal: never derive it from detx.

`read(config, fact)` is the one place that knows where a fact lives in a built detx
config: when the configs are restructured, update it (and only it). A value where detx
knowingly departs from Paddle is pinned in KNOWN_DIFFERENCES (with the reason);
NOT_IN_CONFIG lists the Paddle facts that detx fixes in code rather than in the config.
Fast tier: builds configs only, no JAX compute.
"""
import pytest

from detx import config as cfg
from detx import schedules

ROWS = sorted(p.stem for p in cfg.CONFIG_DIR.glob('*.py') if p.stem != 'quickstart')
THIRD = 0.3333333333333333  # LinearWarmup.start_factor as the ymls write it


def _sched(base_lr, batch, max_iters, milestones, warmup_steps=500, warmup_factor=THIRD):
  """yml LearningRate (base_lr, PiecewiseDecay, LinearWarmup), max_iters, feed batch x 8."""
  return dict(base_lr=base_lr, batch=batch, max_iters=max_iters, milestones=milestones,
              warmup_steps=warmup_steps, warmup_factor=warmup_factor)


# ---------------------------------------------------------------- family bases (literal)
_OPTIM = dict(
    lr_gamma=0.1,         # yml PiecewiseDecay.gamma
    momentum=0.9,         # yml OptimizerBuilder.optimizer.momentum
    weight_decay=1e-4)    # yml OptimizerBuilder.regularizer L2 factor

_RESNET = dict(
    _OPTIM,
    backbone='ResNet',           # yml <architecture>.backbone
    depth=50, variant='b',       # yml ResNet.depth; ResNet.variant default 'b' (resnet.py)
    norm='affine_channel',       # yml ResNet.norm_type
    freeze_norm=True,            # ResNet.freeze_norm default (backbones/resnet.py)
    freeze_at=2,                 # yml ResNet.freeze_at
    train_short_side=800, train_long_side=1333,  # data_feed.py FasterRCNN/MaskRCNNTrainFeed
    test_short_side=800, test_long_side=1333)    # ResizeImage; ...EvalFeed the same

_C4 = dict(
    _RESNET,
    anchor_sizes=(32, 64, 128, 256, 512),  # yml RPNHead.anchor_generator.anchor_sizes
    aspect_ratios=(0.5, 1.0, 2.0),         # yml anchor_generator.aspect_ratios
    anchor_strides=(16,),                  # yml anchor_generator.stride [16, 16]
    rpn_batch_size_per_im=256, rpn_fg_fraction=0.5,        # yml rpn_target_assign
    rpn_positive_overlap=0.7, rpn_negative_overlap=0.3,    # yml rpn_target_assign
    rpn_straddle_thresh=0.0,                               # yml rpn_target_assign
    rpn_train_pre_nms_top_n=12000, rpn_train_post_nms_top_n=2000,  # yml train_proposal
    rpn_test_pre_nms_top_n=6000, rpn_test_post_nms_top_n=1000,     # yml test_proposal
    rpn_nms_thresh=0.7, rpn_min_size=0.0,                  # yml train/test_proposal
    roi_batch_size_per_im=512, roi_fg_fraction=0.25,       # yml BBoxAssigner
    roi_fg_thresh=0.5, roi_bg_thresh_hi=0.5, roi_bg_thresh_lo=0.0,  # yml BBoxAssigner
    bbox_reg_weights=(0.1, 0.1, 0.2, 0.2),                 # yml BBoxAssigner
    roi_resolution=14, roi_sampling_ratio=0,               # yml RoIAlign
    nms_score_threshold=0.05, nms_threshold=0.5, nms_keep_top_k=100,  # yml BBoxHead.nms
    nms_top_k=-1,                  # MultiClassNMS default (modeling/ops.py): no cap
    eval_pad_stride=0,             # FasterRCNNEvalFeed PadBatch() default pad_to_stride 0
    train_pad_stride=0)            # FasterRCNNTrainFeed PadBatch() default: no padding

_FPN = dict(
    _RESNET,
    anchor_sizes=(32, 64, 128, 256, 512),  # yml FPNRPNHead.anchor_start_size 32 x2 per level
    aspect_ratios=(0.5, 1.0, 2.0),         # yml anchor_generator.aspect_ratios
    anchor_strides=(4, 8, 16, 32, 64),     # rpn_head.py: 2**level, yml min/max_level 2-6
    rpn_batch_size_per_im=256, rpn_fg_fraction=0.5,        # yml rpn_target_assign
    rpn_positive_overlap=0.7, rpn_negative_overlap=0.3,    # yml rpn_target_assign
    rpn_straddle_thresh=0.0,                               # yml rpn_target_assign
    rpn_train_pre_nms_top_n=2000, rpn_train_post_nms_top_n=2000,  # yml train_proposal
    rpn_test_pre_nms_top_n=1000, rpn_test_post_nms_top_n=1000,    # yml test_proposal
    rpn_train_collect_top_n=2000,  # rpn_head.py: collect_fpn_proposals(post_nms_top_n)
    rpn_test_collect_top_n=1000,   # rpn_head.py: the same, test_proposal
    rpn_nms_thresh=0.7, rpn_min_size=0.0,                  # yml train/test_proposal
    roi_batch_size_per_im=512, roi_fg_fraction=0.25,       # yml BBoxAssigner
    roi_fg_thresh=0.5, roi_bg_thresh_hi=0.5, roi_bg_thresh_lo=0.0,  # yml BBoxAssigner
    bbox_reg_weights=(0.1, 0.1, 0.2, 0.2),                 # yml BBoxAssigner
    roi_resolution=7, roi_sampling_ratio=2,                # yml FPNRoIAlign
    roi_canonical_size=224, roi_canonical_level=4,         # yml FPNRoIAlign
    box_head_hidden=1024,                                  # yml TwoFCHead.num_chan
    nms_score_threshold=0.05, nms_threshold=0.5, nms_keep_top_k=100,  # yml BBoxHead.nms
    nms_top_k=-1,                  # MultiClassNMS default (modeling/ops.py): no cap
    eval_pad_stride=32,            # yml EvalFeed PadBatch.pad_to_stride
    train_pad_stride=32)           # yml TrainFeed PadBatch.pad_to_stride

_MASK_C4 = dict(mask_resolution=14,      # yml MaskHead.resolution / MaskAssigner.resolution
                mask_roi_resolution=14,  # yml RoIAlign.resolution (the res5 head's input)
                mask_num_convs=0,        # MaskHead.num_convs default (mask_head.py)
                mask_conv_dim=256)       # yml MaskHead.num_chan_reduced
_MASK_FPN = dict(mask_resolution=28,     # yml MaskHead.resolution / MaskAssigner.resolution
                 mask_roi_resolution=14,  # yml FPNRoIAlign.mask_resolution
                 mask_num_convs=4,        # yml MaskHead.num_convs
                 mask_conv_dim=256)       # yml MaskHead.num_chan_reduced


def _fpn(images_per_gpu, **kw):
  # rpn_collect_images: collect_fpn_proposals ranks one GPU's images together (yml feed batch)
  return dict(_FPN, rpn_collect_images=images_per_gpu, **kw)


_RETINA = dict(
    _RESNET,
    anchor_base_scale=4,               # yml RetinaHead.base_scale
    anchor_scales_per_octave=3,        # yml RetinaHead.num_scales_per_octave
    aspect_ratios=(1.0, 2.0, 0.5),     # yml RetinaHead.anchor_generator.aspect_ratios
    anchor_strides=(8, 16, 32, 64, 128),  # retina_head.py 1/spatial_scale, levels 3-7 (yml)
    positive_overlap=0.5, negative_overlap=0.4,  # yml RetinaHead.target_assign
    focal_gamma=2.0, focal_alpha=0.25,           # yml RetinaHead.gamma / alpha
    smooth_l1_sigma=3.0151134457776365,          # yml RetinaHead.sigma
    prior_prob=0.01, head_num_convs=4, head_channels=256,  # yml RetinaHead
    nms_score_threshold=0.05, nms_threshold=0.5,  # yml output_decoder score/nms_thresh
    nms_top_k=1000, nms_keep_top_k=100,  # yml output_decoder pre_nms_top_n/detections_per_im
    loss_group_images=2,               # yml FasterRCNNTrainFeed.batch_size (fg count per GPU)
    eval_pad_stride=128, train_pad_stride=128)  # yml Train/EvalFeed PadBatch.pad_to_stride

_YOLO_HEAD = dict(
    _OPTIM,
    weight_decay=5e-4,                 # yml regularizer L2 factor
    anchors=((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
             (116, 90), (156, 198), (373, 326)),          # yml YOLOv3Head.anchors
    anchor_masks=((6, 7, 8), (3, 4, 5), (0, 1, 2)),       # yml YOLOv3Head.anchor_masks
    ignore_thresh=0.7, label_smooth=True,                 # yml YOLOv3Head
    nms_score_threshold=0.01, nms_threshold=0.45,         # yml YOLOv3Head.nms
    nms_top_k=1000, nms_keep_top_k=100,                   # yml YOLOv3Head.nms
    conf_thresh=0.01,                  # yolo_head.py: yolo_box(conf_thresh=nms.score_threshold)
    train_sizes=(320, 352, 384, 416, 448, 480, 512, 544, 576, 608),  # YoloTrainFeed RandomShape
    test_size=608,                     # YoloEvalFeed ResizeImage(target_size=608)
    mixup_epochs=250,                  # YoloTrainFeed.mixup_epoch
    max_boxes=50)                      # YoloTrainFeed.num_max_boxes
_YOLO = dict(
    _YOLO_HEAD,
    backbone='DarkNet',                # yml YOLOv3.backbone
    norm='sync_bn',                    # yml DarkNet.norm_type
    darknet_depths=(1, 2, 8, 8, 4))    # darknet.py depth_cfg[53] (yml DarkNet.depth 53)
_YOLO_MOBILENET = dict(
    _YOLO_HEAD,
    backbone='MobileNet',              # yml YOLOv3.backbone (yolov3_mobilenet_v1.yml)
    norm='sync_bn',                    # yml MobileNet.norm_type
    norm_decay=0.0,                    # yml MobileNet.norm_decay
    conv_group_scale=1,                # yml MobileNet.conv_group_scale
    with_extra_blocks=False,           # yml MobileNet.with_extra_blocks
    conv_learning_rate=1.0,            # MobileNet.conv_learning_rate default (mobilenet.py)
    freeze_norm=False)                 # mobilenet.py: batch_norm, never use_global_stats
_YOLO_R34 = dict(
    _YOLO_HEAD,
    backbone='ResNet',                 # yml YOLOv3.backbone (yolov3_r34.yml)
    depth=34, variant='b',             # yml ResNet.depth; ResNet.variant default 'b'
    norm='sync_bn',                    # yml ResNet.norm_type
    norm_decay=0.0,                    # yml ResNet.norm_decay
    freeze_at=0, freeze_norm=False)    # yml ResNet.freeze_at / freeze_norm
# the *_voc.yml rows: every other number as their COCO row
_VOC = dict(
    num_classes=20,                    # yml num_classes
    label_smooth=False,                # yml YOLOv3Head.label_smooth
    metric='voc', map_type='11point',  # yml metric VOC; eval_utils voc_bbox_eval default
    dataset='voc',                     # yml feeds dataset_dir dataset/voc, VOCdevkit/VOC_all
    train_set='voc2007_trainval+voc2012_trainval',  # VOC_all train.txt (07+12 trainval)
    eval_set='voc2007_test')           # VOC_all val.txt (07 test)
_SSD = dict(  # configs/ssd_mobilenet_v1_voc.yml (SSD, MobileNet, MultiBoxHead sections)
    backbone='MobileNet',              # yml SSD.backbone
    norm='bn',                         # MobileNet.norm_type default (mobilenet.py)
    norm_decay=0.0,                    # yml MobileNet.norm_decay
    conv_group_scale=1,                # yml MobileNet.conv_group_scale
    conv_learning_rate=0.1,            # yml MobileNet.conv_learning_rate
    with_extra_blocks=True,            # yml MobileNet.with_extra_blocks
    extra_block_filters=((256, 512), (128, 256), (128, 256), (64, 128)),  # yml MobileNet
    freeze_norm=False,                 # mobilenet.py: batch_norm, never use_global_stats
    num_classes=20,                    # yml num_classes 21 = 20 + background
    prior_base_size=300, prior_min_ratio=20, prior_max_ratio=90,  # yml MultiBoxHead
    prior_min_sizes=(60.0, 105.0, 150.0, 195.0, 240.0, 285.0),    # yml MultiBoxHead
    prior_max_sizes=((), 150.0, 195.0, 240.0, 285.0, 300.0),      # yml MultiBoxHead
    prior_aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0),
                         (2.0, 3.0)),  # yml MultiBoxHead.aspect_ratios
    prior_flip=True, prior_offset=0.5,  # yml MultiBoxHead
    prior_clip=False, prior_variances=(0.1, 0.1, 0.2, 0.2),  # fluid multi_box_head defaults
    overlap_threshold=0.5, neg_pos_ratio=3.0, neg_overlap=0.5,  # fluid ssd_loss defaults
    nms_threshold=0.45, nms_top_k=400, nms_keep_top_k=200,  # yml SSD.output_decoder
    nms_score_threshold=0.01, nms_eta=1.0,                  # yml SSD.output_decoder
    optimizer='rmsprop', momentum=0.0,  # yml OptimizerBuilder.optimizer
    rho=0.95, epsilon=1e-6,            # fluid RMSPropOptimizer defaults (Paddle 1.5)
    weight_decay=5e-5,                 # yml OptimizerBuilder.regularizer L2 factor
    base_lr=0.001, max_iters=28000,    # yml PiecewiseDecay.values[0], max_iters
    lr_values=(0.001, 0.0005, 0.00025, 0.0001, 0.00001),  # yml PiecewiseDecay.values
    milestones=(10000, 15000, 20000, 25000),              # yml PiecewiseDecay.milestones
    warmup_steps=0,                    # the yml has no LinearWarmup
    batch=64, loss_group_images=32,    # SSDTrainFeed.batch_size 32 x 2 GPUs (ZOO.md 120e)
    image_size=300,                    # SSDTrain/EvalFeed image_shape [3, 300, 300]
    expand_fill=127.5,                 # SSDTrainFeed ExpandImage mean default
    max_boxes=0,                       # SSDTrainFeed: no num_max_boxes (LoD gt)
    metric='voc', map_type='11point',  # yml metric VOC, SSD.metric.ap_version
    dataset='voc',                     # yml feeds dataset_dir dataset/voc, VOCdevkit/VOC_all
    train_set='voc2007_trainval+voc2012_trainval',  # VOC_all train.txt (07+12 trainval)
    eval_set='voc2007_test',           # VOC_all val.txt (07 test)
    pretrain_weights='https://paddlemodels.bj.bcebos.com/object_detection/'
                     'ssd_mobilenet_v1_coco_pretrained.tar')  # yml pretrain_weights
_X101_VD = dict(
    backbone='ResNeXt',                # yml <architecture>.backbone
    depth=101, variant='d',            # yml ResNeXt.depth / variant
    groups=64, group_width=4)          # yml ResNeXt.groups / group_width
_SE154_VD = dict(
    backbone='SENet',                  # yml <architecture>.backbone
    depth=152, variant='d',            # yml SENet.depth / variant
    groups=64, group_width=4)          # yml SENet.groups / group_width

_CASCADE = dict(
    roi_fg_thresh=(0.5, 0.6, 0.7),     # yml CascadeBBoxAssigner.fg_thresh
    roi_bg_thresh_hi=(0.5, 0.6, 0.7),  # yml CascadeBBoxAssigner.bg_thresh_hi
    roi_bg_thresh_lo=(0.0, 0.0, 0.0),  # yml CascadeBBoxAssigner.bg_thresh_lo
    bbox_reg_weights=(10, 20, 30),     # yml CascadeBBoxAssigner (variances 1/w, 2/w)
    cascade_loss_weights=(1.0, 0.5, 0.25),  # cascade_rcnn.py cascade_rcnn_loss_weight
    cascade_head_lr=(1.0, 2.0, 4.0))   # cascade_rcnn.py wb_scalar = 1 / loss weight

# ---------------------------------------------------------------- the table
_1X_B8 = _sched(0.01, 8, 180000, (120000, 160000))
_2X_B8 = _sched(0.01, 8, 360000, (240000, 320000))
_1X_B16 = _sched(0.02, 16, 90000, (60000, 80000))
_2X_B16 = _sched(0.02, 16, 180000, (120000, 160000))
# yml LinearWarmup steps 1000, start_factor 0.1 (the x101 / se154 ymls)
_W1000 = dict(warmup_steps=1000, warmup_factor=0.1)
_270E = _sched(0.001, 64, 500200, (400000, 450000), warmup_steps=4000, warmup_factor=0.0)
_YOLO_VOC = _sched(0.001, 64, 70000, (55000, 62000), warmup_steps=1000, warmup_factor=0.0)
_S1X_B8 = _sched(0.01, 8, 260000, (200000, 240000), **_W1000)  # se154 ymls: max_iters 260000

ZOO = {
    'faster_rcnn_r50_1x': dict(_C4, **_1X_B8),
    'faster_rcnn_r50_2x': dict(_C4, **_2X_B8),
    'mask_rcnn_r50_1x': dict(_C4, **_MASK_C4, **_1X_B8),
    'mask_rcnn_r50_2x': dict(_C4, **_MASK_C4, **_2X_B8),
    'faster_rcnn_r50_vd_1x': dict(_C4, **_1X_B8, variant='d'),
    'faster_rcnn_r101_1x': dict(_C4, **_1X_B8, depth=101),
    'faster_rcnn_r50_fpn_1x': _fpn(2, **_1X_B16),
    'faster_rcnn_r50_fpn_2x': _fpn(2, **_2X_B16),
    'faster_rcnn_r50_vd_fpn_2x': _fpn(2, **_2X_B16, variant='d'),
    'faster_rcnn_r101_fpn_1x': _fpn(1, **_1X_B8, depth=101),
    'faster_rcnn_r101_fpn_2x': _fpn(1, **_2X_B8, depth=101),
    'faster_rcnn_r101_vd_fpn_1x': _fpn(1, **dict(_1X_B8, warmup_steps=1000), depth=101,
                                       variant='d'),
    'faster_rcnn_r101_vd_fpn_2x': _fpn(1, **dict(_2X_B8, warmup_steps=1000), depth=101,
                                       variant='d'),
    'mask_rcnn_r50_fpn_1x': _fpn(1, **_MASK_FPN, **_1X_B8),
    'mask_rcnn_r50_fpn_2x': _fpn(1, **_MASK_FPN, **_2X_B8),
    'mask_rcnn_r50_vd_fpn_2x': _fpn(1, **_MASK_FPN, **_2X_B8, variant='d'),
    'mask_rcnn_r101_fpn_1x': _fpn(1, **_MASK_FPN, **_1X_B8, depth=101),
    'mask_rcnn_r101_vd_fpn_1x': _fpn(1, **_MASK_FPN, **dict(_1X_B8, warmup_steps=1000,
                                                            warmup_factor=0.1),
                                     depth=101, variant='d'),
    'cascade_rcnn_r50_fpn_1x': dict(_fpn(2, **_1X_B16), **_CASCADE),
    'retinanet_r50_fpn_1x': dict(_RETINA, **_sched(0.01, 16, 90000, (60000, 80000))),
    'retinanet_r101_fpn_1x': dict(_RETINA, **_sched(0.01, 16, 90000, (60000, 80000)),
                                  depth=101),
    'yolov3_darknet': dict(_YOLO, **_270E),
    'yolov3_mobilenet_v1': dict(_YOLO_MOBILENET, **_270E),
    'yolov3_r34': dict(_YOLO_R34, **_270E),
    'yolov3_darknet_voc': dict(_YOLO, **_YOLO_VOC, **_VOC),
    'yolov3_mobilenet_v1_voc': dict(_YOLO_MOBILENET, **_YOLO_VOC, **_VOC),
    'yolov3_r34_voc': dict(_YOLO_R34, **_YOLO_VOC, **_VOC),
    'faster_rcnn_x101_vd_64x4d_fpn_1x': _fpn(1, **dict(_1X_B8, **_W1000), **_X101_VD),
    'faster_rcnn_x101_vd_64x4d_fpn_2x': _fpn(1, **dict(_2X_B8, **_W1000), **_X101_VD),
    'mask_rcnn_x101_vd_64x4d_fpn_1x': _fpn(1, **_MASK_FPN, **dict(_1X_B8, **_W1000),
                                           **_X101_VD),
    'mask_rcnn_x101_vd_64x4d_fpn_2x': _fpn(1, **_MASK_FPN, **dict(_2X_B8, **_W1000),
                                           **_X101_VD),
    'faster_rcnn_se154_vd_fpn_s1x': _fpn(1, **_S1X_B8, **_SE154_VD),
    'mask_rcnn_se154_vd_fpn_s1x': _fpn(1, **_MASK_FPN, **_S1X_B8, **_SE154_VD),
    'ssd_mobilenet_v1_voc': _SSD,
}

_C4_ROWS = ('faster_rcnn_r50_1x', 'faster_rcnn_r50_2x', 'mask_rcnn_r50_1x', 'mask_rcnn_r50_2x',
            'faster_rcnn_r50_vd_1x', 'faster_rcnn_r101_1x')

# (row, fact): (the value detx has today, why it departs from Paddle)
KNOWN_DIFFERENCES = {
    ('ssd_mobilenet_v1_voc', 'max_boxes'): (64, 'static shapes: ground truth padded to '
                                             'data.max_boxes (VOC images have at most 56)'),
    **{(r, 'train_pad_stride'): (32, 'static shapes: C4 batches padded to buckets rounded to '
                                 'data.pad_multiple (loader default 32); Paddle: 1 img/GPU, '
                                 'unpadded (im_info stays the unpadded size in both)')
       for r in _C4_ROWS},
}

# Paddle facts detx fixes in code, not in the config: read() raises KeyError for them.
NOT_IN_CONFIG = {
    ('ssd_mobilenet_v1_voc', 'norm_decay'): 'detx.models.ssd.decay_mask: no L2 on the '
                                            'backbone norms (norm_decay 0)',
    ('ssd_mobilenet_v1_voc', 'nms_eta'): 'detx.ops.multiclass_nms: eta 1 only',
    ('ssd_mobilenet_v1_voc', 'expand_fill'): 'detx.data.transforms.ssd.EXPAND_FILL',
    **{(r, 'norm'): 'detx.models.layers ConvBN: trainable BatchNorm with '
                    'statistics over the whole jitted batch (= sync_bn)'
       for r in ('yolov3_darknet', 'yolov3_darknet_voc')},
    **{(r, 'norm_decay'): 'detx.optim.kernel_decay_mask: L2 on conv / fc kernels only, '
                          'never on norm scales and offsets (norm_decay 0)'
       for r in ('yolov3_mobilenet_v1', 'yolov3_r34', 'yolov3_mobilenet_v1_voc',
                 'yolov3_r34_voc')},
    **{(r, 'conv_learning_rate'): 'no backbone conv lr multiplier: every '
                                  'conv at 1.0, the default this yml keeps'
       for r in ('yolov3_mobilenet_v1', 'yolov3_mobilenet_v1_voc')},
}


# ---------------------------------------------------------------- the one accessor
def _at(c, dotted):
  node = c
  try:
    for k in dotted.split('.'):
      node = node[k]
    return node
  except (KeyError, TypeError):
    raise KeyError(f'no detx config key {dotted}') from None


_SCHEDULE = dict(base_lr='optim.base_lr', warmup_factor='optim.schedule.warmup_factor',
                 lr_gamma='optim.schedule.gamma', max_iters='train.steps',
                 batch='train.batch_size', momentum='optim.momentum',
                 weight_decay='optim.weight_decay')
_BACKBONE_PATHS = dict(  # ResNet / ResNeXt / SENet (and MobileNet's freeze_norm)
    depth='model.backbone.depth', variant='model.backbone.variant',
    groups='model.backbone.groups', group_width='model.backbone.group_width',
    freeze_norm='model.backbone.freeze_norm', freeze_at='model.backbone.freeze_at')
_RESNET_PATHS = dict(
    _BACKBONE_PATHS,
    train_short_side='data.short_side', train_long_side='data.long_side',
    test_short_side='data.short_side', test_long_side='data.long_side')  # one key each
_RCNN_PATHS = dict(
    _RESNET_PATHS, aspect_ratios='model.anchor.aspect_ratios',
    rpn_batch_size_per_im='model.rpn.batch_size_per_im',
    rpn_fg_fraction='model.rpn.fg_fraction',
    rpn_positive_overlap='model.rpn.positive_overlap',
    rpn_negative_overlap='model.rpn.negative_overlap',
    rpn_straddle_thresh='model.rpn.straddle_thresh',
    rpn_train_pre_nms_top_n='model.rpn.train_pre_nms_top_n',
    rpn_train_post_nms_top_n='model.rpn.train_post_nms_top_n',
    rpn_test_pre_nms_top_n='model.rpn.test_pre_nms_top_n',
    rpn_test_post_nms_top_n='model.rpn.test_post_nms_top_n',
    rpn_train_collect_top_n='model.rpn.train_collect_top_n',
    rpn_test_collect_top_n='model.rpn.test_collect_top_n',
    rpn_collect_images='model.rpn.collect_images',
    rpn_nms_thresh='model.rpn.nms_thresh', rpn_min_size='model.rpn.min_size',
    roi_batch_size_per_im='model.roi.batch_size_per_im',
    roi_fg_fraction='model.roi.fg_fraction', roi_fg_thresh='model.roi.fg_thresh',
    roi_bg_thresh_hi='model.roi.bg_thresh_hi', roi_bg_thresh_lo='model.roi.bg_thresh_lo',
    bbox_reg_weights='model.roi.bbox_reg_weights',
    roi_resolution='model.roi.resolution', roi_sampling_ratio='model.roi.sampling_ratio',
    roi_canonical_size='model.roi.canonical_size',
    roi_canonical_level='model.roi.canonical_level', box_head_hidden='model.roi.hidden',
    nms_score_threshold='model.nms.score_threshold', nms_threshold='model.nms.nms_threshold',
    nms_keep_top_k='model.nms.keep_top_k',
    nms_top_k='model.nms.max_candidates',  # -1: per-class NMS over every pair, no cap
    eval_pad_stride='model.rpn.eval_pad_stride',
    mask_resolution='model.mask.resolution', mask_roi_resolution='model.mask.roi_resolution',
    mask_num_convs='model.mask.num_convs', mask_conv_dim='model.mask.conv_dim')
_CASCADE_PATHS = dict(  # rcnn's cascade roi_losses: bg_thresh_hi = the stage's fg_thresh
    roi_fg_thresh='model.cascade.fg_thresholds', roi_bg_thresh_hi='model.cascade.fg_thresholds',
    bbox_reg_weights='model.cascade.reg_weights',
    cascade_loss_weights='model.cascade.loss_weights')
_RETINA_PATHS = dict(
    _RESNET_PATHS, anchor_base_scale='model.anchor.base_scale',
    anchor_scales_per_octave='model.anchor.scales_per_octave',
    aspect_ratios='model.anchor.aspect_ratios',
    positive_overlap='model.target.positive_overlap',
    negative_overlap='model.target.negative_overlap',
    focal_gamma='model.loss.gamma', focal_alpha='model.loss.alpha',
    smooth_l1_sigma='model.loss.sigma', loss_group_images='model.loss.group_images',
    prior_prob='model.head.prior_prob', head_num_convs='model.head.num_convs',
    head_channels='model.head.channels',
    nms_score_threshold='model.nms.score_threshold', nms_threshold='model.nms.nms_threshold',
    nms_top_k='model.nms.pre_nms_top_n', nms_keep_top_k='model.nms.keep_top_k',
    eval_pad_stride='model.eval_pad_stride', train_pad_stride='data.pad_multiple')
_YOLO_PATHS = dict(
    _BACKBONE_PATHS,
    darknet_depths='model.backbone.depths', anchors='model.anchors',
    anchor_masks='model.anchor_masks',
    ignore_thresh='model.ignore_thresh', label_smooth='model.label_smooth',
    nms_score_threshold='model.nms.score_threshold', nms_threshold='model.nms.nms_threshold',
    nms_top_k='model.nms.nms_top_k', nms_keep_top_k='model.nms.keep_top_k',
    conf_thresh='model.conf_thresh', train_sizes='data.train_sizes', test_size='eval.size',
    mixup_epochs='data.mixup_epochs', max_boxes='data.max_boxes',
    conv_group_scale='model.backbone.scale', with_extra_blocks='model.backbone.extra_blocks',
    num_classes='model.num_classes', metric='eval.metric', map_type='eval.map_type',
    dataset='data.name')
_SSD_PATHS = dict(
    _BACKBONE_PATHS,
    conv_group_scale='model.backbone.scale', with_extra_blocks='model.backbone.extra_blocks',
    extra_block_filters='model.backbone.extra_filters',
    conv_learning_rate='model.backbone.conv_learning_rate', num_classes='model.num_classes',
    **{f'prior_{k}': f'model.prior.{k}' for k in (
        'base_size', 'min_ratio', 'max_ratio', 'min_sizes', 'aspect_ratios', 'flip',
        'offset', 'clip', 'variances')},
    **{k: f'model.loss.{k}' for k in ('overlap_threshold', 'neg_pos_ratio', 'neg_overlap')},
    loss_group_images='model.loss.group_images',
    nms_threshold='model.nms.nms_threshold', nms_top_k='model.nms.nms_top_k',
    nms_keep_top_k='model.nms.keep_top_k', nms_score_threshold='model.nms.score_threshold',
    optimizer='optim.name', rho='optim.rho', epsilon='optim.epsilon',
    image_size='data.image_size', metric='eval.metric', map_type='eval.map_type',
    dataset='data.name', pretrain_weights='model.pretrained')
_NORMS = {'affine': 'affine_channel'}  # detx name -> Paddle norm_type


def _paddle_backbone(b):
  """The Paddle backbone class a detx model.backbone builds."""
  if b.name == 'resnet':
    return 'ResNeXt' if b.groups > 1 else 'ResNet'
  return {'senet': 'SENet', 'darknet': 'DarkNet', 'mobilenet': 'MobileNet'}[b.name]


def _levels(m):
  """The anchor levels (stride 2**level): the FPN neck's, or C4's res4."""
  fpn = m.neck.name == 'fpn'
  return tuple(range(m.neck.min_level, m.neck.max_level + 1)) if fpn else (4,)


def read(config, fact):
  """The value of `fact` (a ZOO key) in a built detx config; KeyError if it has none."""
  m = config.model
  rcnn = m.name in ('faster_rcnn', 'mask_rcnn', 'cascade_rcnn')
  if fact in ('warmup_steps', 'milestones'):  # what detx runs at train.steps
    warmup, milestones = schedules.resolve(config.optim.schedule, config.train.steps)
    return warmup if fact == 'warmup_steps' else milestones
  if fact == 'norm' and m.backbone.name != 'darknet':  # DarkNet: ConvBN (NOT_IN_CONFIG)
    return _NORMS.get(m.backbone.norm, m.backbone.norm)
  if fact == 'backbone':
    return _paddle_backbone(m.backbone)
  if fact in ('train_set', 'eval_set'):  # the VOC lists a split name reads
    from detx.data import voc
    split = config.data.train_split if fact == 'train_set' else config.eval.split
    return '+'.join(f'{folder}_{name}' for folder, name in voc.parse_split(split))
  if fact == 'anchor_strides' and m.name != 'yolov3':
    return tuple(2 ** level for level in _levels(m))
  if rcnn and fact == 'anchor_sizes':  # FPN: anchor sizes[0] on the first level, x2 per level
    sizes, levels = _at(config, 'model.anchor.sizes'), _levels(m)
    return tuple(sizes[0] * 2 ** (l - levels[0]) for l in levels) if len(levels) > 1 else sizes
  if rcnn and fact == 'train_pad_stride':
    return config.data.get('pad_multiple', 32)  # detx.data.loader's default
  if m.name == 'cascade_rcnn' and fact == 'roi_bg_thresh_lo':
    return (m.roi.bg_thresh_lo,) * 3  # one value for every stage
  if m.name == 'cascade_rcnn' and fact == 'cascade_head_lr':
    return tuple(1.0 / w for w in m.cascade.loss_weights)  # rcnn build: stage lr 1 / weight
  if m.name == 'ssd' and fact == 'prior_max_sizes':  # detx 0 = Paddle's []
    return tuple(v if v else () for v in m.prior.max_sizes)
  if m.name == 'ssd' and fact == 'lr_values':
    sched = config.optim.schedule
    return tuple(sched.lr_values) or tuple(config.optim.base_lr * f for f in sched.lr_factors)
  if m.name == 'ssd' and fact == 'max_boxes':  # Paddle: every box; detx pads to max_boxes
    return config.data.max_boxes
  paths = dict(_SCHEDULE)
  if rcnn:
    paths.update(_RCNN_PATHS)
    if m.name == 'cascade_rcnn':
      paths.update(_CASCADE_PATHS)
  elif m.name == 'retinanet':
    paths.update(_RETINA_PATHS)
  elif m.name == 'yolov3':
    paths.update(_YOLO_PATHS)
  elif m.name == 'ssd':
    paths.update(_SSD_PATHS)
  if fact not in paths:
    raise KeyError(f'no detx config key for {fact!r} ({m.name})')
  return _at(config, paths[fact])


# ---------------------------------------------------------------- tests
def _plain(v):
  """Tuples/lists (nested) as tuples, for comparison."""
  if isinstance(v, (tuple, list)):
    return tuple(_plain(x) for x in v)
  return v


def _same(actual, expected):
  actual, expected = _plain(actual), _plain(expected)
  if isinstance(expected, tuple):
    return (isinstance(actual, tuple) and len(actual) == len(expected)
            and all(_same(a, e) for a, e in zip(actual, expected)))
  if isinstance(expected, bool) or isinstance(expected, str):
    return actual == expected
  return actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_every_config_has_a_row():
  assert sorted(ZOO) == ROWS, (
      'configs/ and the ZOO table differ: add a row for each new zoo config '
      f'(missing {sorted(set(ROWS) - set(ZOO))}, stale {sorted(set(ZOO) - set(ROWS))})')


@pytest.mark.parametrize('row', sorted(ZOO))
def test_row_matches_paddle(row):
  config = cfg.load(row)
  wrong = []
  for fact, expected in ZOO[row].items():
    if (row, fact) in NOT_IN_CONFIG:
      continue
    actual = read(config, fact)
    if (row, fact) in KNOWN_DIFFERENCES:
      pinned, why = KNOWN_DIFFERENCES[(row, fact)]
      if not _same(actual, pinned):
        wrong.append(f'{fact}: detx {actual!r}; the known difference ({why}) pinned '
                     f'{pinned!r}, Paddle {expected!r}: update KNOWN_DIFFERENCES')
    elif not _same(actual, expected):
      wrong.append(f'{fact}: detx {actual!r}, Paddle {expected!r}')
  assert not wrong, f'{row}:\n  ' + '\n  '.join(wrong)


def test_bookkeeping_entries_name_real_facts():
  for (row, fact), (pinned, why) in KNOWN_DIFFERENCES.items():
    assert fact in ZOO[row] and why and not _same(pinned, ZOO[row][fact])
  for (row, fact), where in NOT_IN_CONFIG.items():
    assert fact in ZOO[row] and where
    with pytest.raises(KeyError):  # a new config key: compare it (drop the entry)
      read(cfg.load(row), fact)
