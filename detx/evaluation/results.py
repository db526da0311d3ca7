"""Detections -> COCO results (the one converter evaluation and predict share).

Paddle's ``bbox2out`` / ``mask2out``: boxes arrive as xyxy in original image pixels
with the legacy "+1" convention (x2 is the last pixel column, inclusive), so a result's
box is ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``; masks become COCO RLE dicts with
``counts`` as str, so the list is JSON-ready and pycocotools' ``COCO.loadRes`` reads it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ['coco_results', 'encode_mask', 'rle_to_json']


def rle_to_json(rle: Mapping[str, Any]) -> dict:
  """A COCO RLE dict with ``counts`` as str (JSON-serialisable)."""
  counts = rle['counts']
  if isinstance(counts, bytes):
    counts = counts.decode('ascii')
  return {'size': [int(s) for s in rle['size']], 'counts': counts}


def encode_mask(mask) -> dict:
  """An RLE dict (counts made str) or an [H, W] binary mask -> JSON-ready RLE."""
  if isinstance(mask, Mapping):
    return rle_to_json(mask)
  from pycocotools import mask as mask_utils
  m = np.asfortranarray(np.asarray(mask) > 0, dtype=np.uint8)
  if m.ndim != 2:
    raise ValueError(f'binary masks must be [H, W], got shape {m.shape}')
  return rle_to_json(mask_utils.encode(m))


def coco_results(image_id: int, boxes, scores, classes, category_ids: Sequence[int],
                 valid=None, masks=None, **extra) -> list[dict]:
  """One image's detections -> COCO result dicts, in slot order.

  Args:
    image_id: the COCO image id of every result.
    boxes: [K, 4] xyxy, original image pixels, legacy +1 convention.
    scores: [K]; classes: [K] contiguous class ids (indices into ``category_ids``).
    category_ids: the COCO category id of each contiguous class id.
    valid: [K] bool; invalid slots are skipped. ``None``: all valid.
    masks: optional length-K sequence (indexed by slot) of COCO RLE dicts or [H, W]
      binary masks; each result then carries its ``segmentation``.
    **extra: fields added to every result (e.g. ``file_name``).

  Returns:
    ``[{'image_id', 'category_id', 'bbox', 'score'(, 'segmentation'), **extra}]``.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  classes = np.asarray(classes).reshape(-1).astype(np.int64)
  idx = (np.arange(len(scores)) if valid is None
         else np.nonzero(np.asarray(valid, bool).reshape(-1))[0])
  if not idx.size:
    return []
  category_ids = np.asarray([int(c) for c in category_ids], np.int64)
  cls = classes[idx]
  if cls.min() < 0 or cls.max() >= len(category_ids):
    raise ValueError(f'class ids {cls} outside [0, {len(category_ids)})')
  bx = boxes[idx]
  xywh = np.stack([bx[:, 0], bx[:, 1], bx[:, 2] - bx[:, 0] + 1,
                   bx[:, 3] - bx[:, 1] + 1], axis=1)
  out = []
  for j, k in enumerate(idx):
    r = {'image_id': int(image_id), 'category_id': int(category_ids[cls[j]]),
         'bbox': [float(v) for v in xywh[j]], 'score': float(scores[k])}
    if masks is not None:
      r['segmentation'] = encode_mask(masks[k])
    r.update(extra)
    out.append(r)
  return out
