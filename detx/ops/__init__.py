"""Public detection ops: jnp arrays in and out, static shapes, validity masks."""
from detx.ops.boxes import (box_area, box_clip_size, box_iou, clip_boxes, cxcywh_to_xyxy,
                            decode_boxes, encode_boxes, xyxy_to_cxcywh)
from detx.ops.nms import multiclass_nms, nms
from detx.ops.yolo import yolo_box, yolo_loss
from detx.ops.anchors import anchor_generator, retinanet_anchor_sizes, retinanet_anchors
from detx.ops.roi_align import fpn_levels, multilevel_roi_align, roi_align
from detx.ops.proposals import collect_fpn_proposals, generate_fpn_proposals, generate_proposals
from detx.ops.sampling import expand_box_targets, rpn_target_assign, sample_rois
from detx.ops.retina import retinanet_detection_output, retinanet_target_assign
from detx.ops.losses import sigmoid_bce, sigmoid_focal_loss, smooth_l1
from detx.ops.batching import group_size, grouped, im_info, padded_hw
from detx.ops.priors import prior_box, ssd_priors
from detx.ops.ssd import bipartite_match, mine_hard_examples, ssd_detection_output, ssd_loss

__all__ = [
    'box_iou', 'box_area', 'xyxy_to_cxcywh', 'cxcywh_to_xyxy', 'clip_boxes', 'box_clip_size',
    'encode_boxes', 'decode_boxes', 'nms', 'multiclass_nms', 'yolo_box', 'yolo_loss',
    'anchor_generator', 'retinanet_anchor_sizes', 'retinanet_anchors',
    'roi_align', 'multilevel_roi_align', 'fpn_levels',
    'generate_proposals', 'generate_fpn_proposals', 'collect_fpn_proposals',
    'rpn_target_assign', 'sample_rois', 'expand_box_targets',
    'retinanet_target_assign', 'retinanet_detection_output',
    'smooth_l1', 'sigmoid_bce', 'sigmoid_focal_loss',
    'im_info', 'padded_hw', 'group_size', 'grouped',
    'prior_box', 'ssd_priors', 'bipartite_match', 'mine_hard_examples', 'ssd_loss',
    'ssd_detection_output',
]
