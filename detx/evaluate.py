"""COCO (pycocotools) and Pascal VOC detection metrics.

Both evaluators accumulate host-side numpy detections image by image (``add``) and
score them at the end (``evaluate``), returning flat ``{name: float}`` dicts whose
keys are the metric names written to ``metrics.jsonl`` (``bbox/AP``, ``segm/AP50``,
``voc/mAP``, ...).

Box convention (PADDLEDET_SPEC §1): detections arrive as xyxy in original image
pixels with the legacy "+1" convention (x2 is the last pixel column, inclusive), so
the COCO results use ``w = x2 - x1 + 1`` exactly as Paddle's ``bbox2out`` does, and
VOC IoUs use ``+1`` areas unless the boxes are normalised to [0, 1].
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    'COCO_STAT_NAMES',
    'CocoEvaluator',
    'VocEvaluator',
    'voc_ap',
    'voc_box_iou',
]

# Order of ``COCOeval.stats``.
COCO_STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                   'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


@contextlib.contextmanager
def _maybe_quiet(verbose: bool):
  """Swallows pycocotools' prints unless ``verbose``."""
  if verbose:
    yield
  else:
    with contextlib.redirect_stdout(io.StringIO()):
      yield


def _load_coco(annotation_file, verbose: bool = False):
  """A ``pycocotools.coco.COCO`` from a path (loaded once) or an existing object."""
  from pycocotools.coco import COCO
  if isinstance(annotation_file, COCO):
    return annotation_file
  with _maybe_quiet(verbose):
    return COCO(os.fspath(annotation_file))


def _rle_to_json(rle: Mapping[str, Any]) -> dict:
  """A COCO RLE dict with ``counts`` as str (JSON-serialisable)."""
  counts = rle['counts']
  if isinstance(counts, bytes):
    counts = counts.decode('ascii')
  return {'size': [int(s) for s in rle['size']], 'counts': counts}


def _encode_mask(mask) -> dict:
  """An RLE dict (returned unchanged) or an [H, W] binary mask -> JSON-ready RLE."""
  if isinstance(mask, Mapping):
    return _rle_to_json(mask)
  from pycocotools import mask as mask_utils
  m = np.asfortranarray(np.asarray(mask) > 0, dtype=np.uint8)
  if m.ndim != 2:
    raise ValueError(f'binary masks must be [H, W], got shape {m.shape}')
  return _rle_to_json(mask_utils.encode(m))


class CocoEvaluator:
  """Accumulates detections and scores them with pycocotools' ``COCOeval``.

  Args:
    annotation_file: path of a COCO instances json, or an already loaded
      ``pycocotools.coco.COCO`` (shared, never copied). Loaded once here.
    category_ids: COCO category id of each contiguous class id (classes passed to
      ``add`` index into it). ``None``: the annotation file's ids in sorted order
      (the Paddle/detx mapping, spec §4 "Datasets").
    image_ids: images to evaluate. ``None``: every image seen in ``add`` (including
      images for which all detection slots were invalid).
    iou_types: any of ``'bbox'``, ``'segm'``.
    verbose: let pycocotools print its loading messages and summary tables.
  """

  def __init__(self,
               annotation_file,
               category_ids: Sequence[int] | None = None,
               image_ids: Iterable[int] | None = None,
               iou_types: Sequence[str] = ('bbox',),
               verbose: bool = False):
    if isinstance(iou_types, str):
      iou_types = (iou_types,)
    for t in iou_types:
      if t not in ('bbox', 'segm'):
        raise ValueError(f'unsupported iou type {t!r} (bbox or segm)')
    self.iou_types = tuple(iou_types)
    self.verbose = verbose
    self.coco_gt = _load_coco(annotation_file, verbose)
    if category_ids is None:
      category_ids = sorted(self.coco_gt.getCatIds())
    self.category_ids = np.asarray([int(c) for c in category_ids], np.int64)
    self._fixed_image_ids = (None if image_ids is None
                             else sorted({int(i) for i in image_ids}))
    self._gt_image_ids = set(self.coco_gt.getImgIds())
    self.coco_evals: dict[str, Any] = {}
    self.reset()

  def reset(self):
    """Drops every accumulated detection."""
    self._results = {t: [] for t in self.iou_types}
    self._seen_image_ids: set[int] = set()
    self.coco_evals = {}

  @property
  def image_ids(self) -> list[int]:
    """The image ids that ``evaluate`` scores."""
    if self._fixed_image_ids is not None:
      return list(self._fixed_image_ids)
    return sorted(self._seen_image_ids)

  def results(self, iou_type: str = 'bbox') -> list[dict]:
    """The accumulated COCO results (a list of dicts) for one iou type."""
    return self._results[iou_type]

  def add(self, image_ids, boxes, scores, classes, valid=None, masks=None):
    """Adds a batch of detections (numpy or jax arrays).

    Args:
      image_ids: [B] COCO image ids. Ids absent from the annotations are allowed
        only for images without valid detections (batch padding) and are ignored.
      boxes: [B, K, 4] xyxy, original image pixels, legacy +1 convention.
      scores: [B, K].
      classes: [B, K] contiguous class ids (indices into ``category_ids``).
      valid: [B, K] bool; invalid slots are skipped. ``None``: all valid.
      masks: for 'segm': a length-B sequence; ``masks[b][k]`` is a COCO RLE dict or
        an [H, W] binary mask in original image pixels for each valid slot.
    """
    image_ids = np.asarray(image_ids).reshape(-1)
    boxes = np.asarray(boxes, np.float64)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes)
    batch = image_ids.shape[0]
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[-1] != 4:
      raise ValueError(f'boxes {boxes.shape} do not match image_ids {image_ids.shape}')
    valid = (np.ones(scores.shape, bool) if valid is None
             else np.asarray(valid, bool).reshape(scores.shape))
    if masks is not None and len(masks) != batch:
      raise ValueError(f'masks has {len(masks)} entries for {batch} images')

    for b in range(batch):
      image_id = int(image_ids[b])
      idx = np.nonzero(valid[b])[0]
      if image_id not in self._gt_image_ids:
        if idx.size:
          raise ValueError(f'image id {image_id} is not in the annotations')
        continue
      self._seen_image_ids.add(image_id)
      if not idx.size:
        continue
      cls = classes[b, idx].astype(np.int64)
      if cls.min() < 0 or cls.max() >= len(self.category_ids):
        raise ValueError(f'class ids {cls} outside [0, {len(self.category_ids)})')
      cat_ids = self.category_ids[cls]
      bx = boxes[b, idx]
      # Paddle bbox2out: [x1, y1, x2 - x1 + 1, y2 - y1 + 1].
      xywh = np.stack([bx[:, 0], bx[:, 1], bx[:, 2] - bx[:, 0] + 1,
                       bx[:, 3] - bx[:, 1] + 1], axis=1)
      sc = scores[b, idx]
      if 'bbox' in self._results:
        out = self._results['bbox']
        for j in range(idx.size):
          out.append({'image_id': image_id, 'category_id': int(cat_ids[j]),
                      'bbox': [float(v) for v in xywh[j]],
                      'score': float(sc[j])})
      if 'segm' in self._results and masks is not None:
        out = self._results['segm']
        per_image = masks[b]
        for j, k in enumerate(idx):
          out.append({'image_id': image_id, 'category_id': int(cat_ids[j]),
                      'segmentation': _encode_mask(per_image[k]),
                      'score': float(sc[j])})

  def evaluate(self) -> dict[str, float]:
    """Runs COCOeval per iou type -> {'bbox/AP': ..., ..., 'segm/ARl': ...}.

    Stats are pycocotools' (an area range without ground truth keeps its -1). An
    iou type without any detection scores 0.0 on every stat.
    """
    from pycocotools.cocoeval import COCOeval
    image_ids = self.image_ids
    metrics = {}
    self.coco_evals = {}
    for iou_type in self.iou_types:
      results = self._results[iou_type]
      if not results or not image_ids:
        stats = [0.0] * len(COCO_STAT_NAMES)
      else:
        with _maybe_quiet(self.verbose):
          # loadRes annotates its input dicts in place: hand it copies.
          coco_dt = self.coco_gt.loadRes([dict(r) for r in results])
          coco_eval = COCOeval(self.coco_gt, coco_dt, iou_type)
          coco_eval.params.imgIds = image_ids
          coco_eval.evaluate()
          coco_eval.accumulate()
          coco_eval.summarize()
        self.coco_evals[iou_type] = coco_eval
        stats = [float(s) for s in coco_eval.stats]
      for name, value in zip(COCO_STAT_NAMES, stats):
        metrics[f'{iou_type}/{name}'] = value
    return metrics

  def write_json(self, path, iou_type: str = 'bbox') -> str:
    """Writes one iou type's results as a COCO results JSON; returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    with open(path, 'w') as f:
      json.dump(self._results[iou_type], f)
    return path


# ----------------------------------------------------------------------------- VOC


def voc_box_iou(box: np.ndarray, gt_boxes: np.ndarray,
                is_bbox_normalized: bool = False) -> np.ndarray:
  """IoU of one xyxy box with [G, 4] boxes, Paddle ``map_utils`` style.

  Unnormalised boxes get +1 widths and heights; boxes that do not overlap with a
  positive-width interval in the raw coordinates (x1 >= gx2, ...) have IoU 0.
  """
  gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  box = np.asarray(box, np.float64)
  one = 0.0 if is_bbox_normalized else 1.0
  ix1 = np.maximum(box[0], gt_boxes[:, 0])
  iy1 = np.maximum(box[1], gt_boxes[:, 1])
  ix2 = np.minimum(box[2], gt_boxes[:, 2])
  iy2 = np.minimum(box[3], gt_boxes[:, 3])
  disjoint = (box[0] >= gt_boxes[:, 2]) | (box[2] <= gt_boxes[:, 0]) | \
             (box[1] >= gt_boxes[:, 3]) | (box[3] <= gt_boxes[:, 1])
  inter = (ix2 - ix1 + one) * (iy2 - iy1 + one)
  area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
  gt_area = ((gt_boxes[:, 2] - gt_boxes[:, 0] + one) *
             (gt_boxes[:, 3] - gt_boxes[:, 1] + one))
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = inter / (area + gt_area - inter)
  return np.where(disjoint, 0.0, iou)


def voc_ap(recall, precision, map_type: str = '11point') -> float:
  """AP of one class from its cumulative recall / precision curve.

  ``recall`` and ``precision`` are per detection, in descending score order.
  '11point': mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t
  (0 when recall never reaches t). 'integral': sum of precision x recall step at
  every detection that raises recall (no precision interpolation), as Paddle's
  ``DetectionMAP`` computes it.
  """
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  if map_type == '11point':
    total = 0.0
    for j in range(11):
      reached = recall >= j / 10.
      total += float(precision[reached].max()) if reached.any() else 0.0
    return total / 11.
  if map_type == 'integral':
    ap, prev = 0.0, 0.0
    for r, p in zip(recall.tolist(), precision.tolist()):
      if math.fabs(r - prev) > 1e-6:
        ap += p * abs(r - prev)
        prev = r
    return ap
  raise ValueError(f"map_type must be '11point' or 'integral', got {map_type!r}")


class VocEvaluator:
  """Pascal VOC mAP with the semantics of Paddle's ``map_utils.DetectionMAP``.

  - A detection is matched to the same-class ground truth box (difficult ones
    included) of highest IoU; it is a TP when that IoU is > ``iou_threshold`` and
    the box is not yet taken, a duplicate (FP) when it is taken, and ignored
    (neither TP nor FP) when the box is difficult and ``evaluate_difficult`` is
    False. Otherwise it is an FP.
  - Difficult boxes are not counted as ground truth unless ``evaluate_difficult``.
  - Within an image detections are matched in descending score order (stable),
    which is Paddle's order for per-class NMS output.
  - mAP is the mean AP over the classes with >= 1 counted ground-truth box and
    >= 1 (non-ignored) detection; 0.0 when there is no such class.

  Labels are ``0 .. num_classes - 1`` (whatever the caller's contiguous ids are;
  a background class simply never appears).
  """

  def __init__(self, num_classes: int, iou_threshold: float = 0.5,
               map_type: str = '11point', evaluate_difficult: bool = False,
               is_bbox_normalized: bool = False):
    if map_type not in ('11point', 'integral'):
      raise ValueError(f"map_type must be '11point' or 'integral', got {map_type!r}")
    self.num_classes = int(num_classes)
    self.iou_threshold = float(iou_threshold)
    self.map_type = map_type
    self.evaluate_difficult = evaluate_difficult
    self.is_bbox_normalized = is_bbox_normalized
    self.reset()

  def reset(self):
    self._scores = [[] for _ in range(self.num_classes)]  # per class: scores
    self._tps = [[] for _ in range(self.num_classes)]  # per class: 1 TP, 0 FP
    self._gt_counts = np.zeros(self.num_classes, np.int64)

  def add(self, gt_boxes, gt_labels, gt_difficult, det_boxes, det_scores,
          det_labels, gt_valid=None, det_valid=None):
    """Adds one image: [G, 4] / [G] / [G] (or None) ground truth and [D, 4] / [D] /
    [D] detections (xyxy, same coordinate frame). Optional ``*_valid`` masks drop
    padded rows."""
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1).astype(np.int64)
    difficult = (np.zeros(gt_labels.shape, bool) if gt_difficult is None
                 else np.asarray(gt_difficult).reshape(-1).astype(bool))
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_labels = np.asarray(det_labels).reshape(-1).astype(np.int64)
    if gt_valid is not None:
      keep = np.asarray(gt_valid, bool).reshape(-1)
      gt_boxes, gt_labels, difficult = gt_boxes[keep], gt_labels[keep], difficult[keep]
    if det_valid is not None:
      keep = np.asarray(det_valid, bool).reshape(-1)
      det_boxes, det_scores, det_labels = (det_boxes[keep], det_scores[keep],
                                           det_labels[keep])
    for labels in (gt_labels, det_labels):
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise ValueError(f'labels {labels} outside [0, {self.num_classes})')

    counted = gt_labels if self.evaluate_difficult else gt_labels[~difficult]
    self._gt_counts += np.bincount(counted, minlength=self.num_classes)

    taken = np.zeros(gt_labels.shape, bool)
    for d in np.argsort(-det_scores, kind='stable'):
      label = int(det_labels[d])
      same = np.nonzero(gt_labels == label)[0]
      tp = 0
      if same.size:
        ious = voc_box_iou(det_boxes[d], gt_boxes[same], self.is_bbox_normalized)
        best = int(np.argmax(ious))  # first of equals, as Paddle's strict '>'
        if ious[best] > self.iou_threshold:
          g = same[best]
          if difficult[g] and not self.evaluate_difficult:
            continue  # matched a difficult box: neither TP nor FP
          if not taken[g]:
            taken[g] = True
            tp = 1
      self._scores[label].append(float(det_scores[d]))
      self._tps[label].append(tp)

  def class_aps(self) -> dict[int, float]:
    """AP of each class with >= 1 counted GT and >= 1 detection."""
    aps = {}
    for c in range(self.num_classes):
      count = int(self._gt_counts[c])
      if count == 0 or not self._scores[c]:
        continue
      order = np.argsort(-np.asarray(self._scores[c]), kind='stable')
      tps = np.asarray(self._tps[c], np.float64)[order]
      acc_tp = np.cumsum(tps)
      acc_fp = np.cumsum(1.0 - tps)
      precision = acc_tp / (acc_tp + acc_fp)
      recall = acc_tp / count
      aps[c] = voc_ap(recall, precision, self.map_type)
    return aps

  def evaluate(self) -> dict[str, float]:
    """-> {'voc/mAP': mean AP over the classes that have GT and detections}."""
    aps = self.class_aps()
    mean = float(np.mean(list(aps.values()))) if aps else 0.0
    return {'voc/mAP': mean}
