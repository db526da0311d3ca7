"""Public detection ops: jnp arrays in and out, static shapes, validity masks."""
from detx.ops.boxes import (box_area, box_iou, clip_boxes, cxcywh_to_xyxy, decode_boxes,
                            encode_boxes, xyxy_to_cxcywh)
from detx.ops.nms import multiclass_nms, nms
from detx.ops.yolo import yolo_box, yolo_loss

__all__ = [
    'box_iou', 'box_area', 'xyxy_to_cxcywh', 'cxcywh_to_xyxy', 'clip_boxes',
    'encode_boxes', 'decode_boxes', 'nms', 'multiclass_nms', 'yolo_box', 'yolo_loss',
]
