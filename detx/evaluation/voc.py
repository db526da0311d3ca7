"""Pascal VOC detection mAP (Paddle's ``map_utils.DetectionMAP``).

``VocEvaluator`` takes one image's ground truth and detections at a time.
``DatasetVocEvaluator`` feeds it as the eval loop feeds ``CocoEvaluator`` (batches of
detections by image id), reading the ground truth once: of a VOC dataset (detx/data/
voc.py) from its records with their ``difficult`` flags, of any COCO-format annotation
file with boxes converted as Paddle's coco loader does (legacy +1 xyxy), ``iscrowd``
boxes counted as difficult. ``dataset_evaluator`` is eval.metric='voc'; after
``evaluate`` (``voc/mAP``), ``report(class_names)`` gives the per-class AP
(``voc/AP/<class>`` in metrics.jsonl), its table and precision-recall curves
(detx/evaluation/report.py prints and writes them).

VOC IoUs use ``+1`` areas unless the boxes are normalised to [0, 1].
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = ['DatasetVocEvaluator', 'VocEvaluator', 'coco_ground_truth', 'dataset_evaluator',
           'dataset_ground_truth', 'voc_ap', 'voc_box_iou']


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

  def class_curves(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(recall, precision) per detection in descending score order, of each class with
    >= 1 counted GT and >= 1 detection."""
    curves = {}
    for c in range(self.num_classes):
      count = int(self._gt_counts[c])
      if count == 0 or not self._scores[c]:
        continue
      order = np.argsort(-np.asarray(self._scores[c]), kind='stable')
      tps = np.asarray(self._tps[c], np.float64)[order]
      acc_tp = np.cumsum(tps)
      acc_fp = np.cumsum(1.0 - tps)
      curves[c] = (acc_tp / count, acc_tp / (acc_tp + acc_fp))
    return curves

  def class_aps(self) -> dict[int, float]:
    """AP of each class with >= 1 counted GT and >= 1 detection."""
    return {c: voc_ap(recall, precision, self.map_type)
            for c, (recall, precision) in self.class_curves().items()}

  def evaluate(self) -> dict[str, float]:
    """-> {'voc/mAP': mean AP over the classes that have GT and detections}."""
    aps = self.class_aps()
    mean = float(np.mean(list(aps.values()))) if aps else 0.0
    return {'voc/mAP': mean}


def coco_ground_truth(annotation_file, image_ids: Iterable[int] | None = None
                      ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """{image id: (boxes [G, 4] legacy xyxy, labels [G] contiguous, difficult [G])} of a
  COCO-format annotation file, as detx's datasets read it (Paddle's coco loader box
  conversion, boxes a dataset would drop left out, labels indexing the sorted category
  ids); ``iscrowd`` marks a box difficult. ``image_ids``: only those images."""
  from detx.data.annotations import scan_annotations
  parsed = scan_annotations(annotation_file, bad_boxes='drop')
  wanted = None if image_ids is None else {int(i) for i in image_ids}
  out = {}
  for im in parsed['images']:
    if wanted is not None and im['id'] not in wanted:
      continue
    objs = im['objects']
    out[im['id']] = (
        np.asarray([o['bbox'] for o in objs], np.float64).reshape(-1, 4),
        np.asarray([o['label'] for o in objs], np.int64),
        np.asarray([o['is_crowd'] for o in objs], bool))
  return out


class DatasetVocEvaluator:
  """``VocEvaluator`` fed as ``CocoEvaluator`` is: batches of detections by image id,
  scored against ground truth read once (``coco_ground_truth``).

  Args:
    ground_truth: ``{image id: (boxes, labels, difficult)}``, e.g. from
      ``coco_ground_truth``.
    num_classes: the contiguous class count.
    image_ids: the images scored; those never passed to ``add`` count their ground
      truth with no detections. ``None``: the ground truth's images.
    map_type, iou_threshold, evaluate_difficult, is_bbox_normalized: as ``VocEvaluator``.
  """

  def __init__(self, ground_truth, num_classes: int, image_ids: Iterable[int] | None = None,
               map_type: str = '11point', iou_threshold: float = 0.5,
               evaluate_difficult: bool = False, is_bbox_normalized: bool = False):
    self.ground_truth = ground_truth
    self.image_ids = sorted(int(i) for i in (ground_truth if image_ids is None else image_ids))
    missing = set(self.image_ids) - set(ground_truth)
    if missing:
      raise ValueError(f'no ground truth for image ids {sorted(missing)[:5]}')
    self.voc = VocEvaluator(num_classes, iou_threshold, map_type, evaluate_difficult,
                            is_bbox_normalized)
    self._seen: set[int] = set()

  def reset(self):
    self.voc.reset()
    self._seen = set()

  def _add_image(self, image_id: int, boxes, scores, classes, valid):
    gt_boxes, gt_labels, difficult = self.ground_truth[image_id]
    self.voc.add(gt_boxes, gt_labels, difficult, boxes, scores, classes, det_valid=valid)
    self._seen.add(image_id)

  def add(self, image_ids, boxes, scores, classes, valid=None, masks=None):
    """Adds a batch: image_ids [B], boxes [B, K, 4] (original pixels, legacy xyxy),
    scores / classes / valid [B, K]. Ids outside ``image_ids`` (batch padding) must
    have no valid detection and are ignored; an image is added at most once.
    ``masks`` is ignored (VOC scores boxes)."""
    del masks
    image_ids = np.asarray(image_ids).reshape(-1)
    scores = np.asarray(scores)
    valid = (np.ones(scores.shape, bool) if valid is None
             else np.asarray(valid, bool).reshape(scores.shape))
    wanted = set(self.image_ids)
    for b, image_id in enumerate(int(i) for i in image_ids):
      if image_id not in wanted:
        if valid[b].any():
          raise ValueError(f'image id {image_id} is not among the evaluated images')
        continue
      if image_id in self._seen:
        raise ValueError(f'image id {image_id} added twice')
      self._add_image(image_id, boxes[b], scores[b], classes[b], valid[b])

  def evaluate(self) -> dict[str, float]:
    """-> {'voc/mAP': ...}; images never added count as images without detections."""
    for image_id in self.image_ids:
      if image_id not in self._seen:
        self._add_image(image_id, np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), np.int64),
                        None)
    return self.voc.evaluate()

  def report(self, class_names):
    """The report of the last ``evaluate`` (detx.evaluation.report.Report): per class
    (``class_names[i]`` names class i) its AP, 0.0 for a class with ground truth and no
    detection (left out of the mean, as Paddle's DetectionMAP), nan without ground
    truth; ``voc/AP/<class>`` for the classes with ground truth; the curves."""
    from detx.evaluation.report import Report, per_class_key
    aps, curves = self.voc.class_aps(), self.voc.class_curves()
    counts = self.voc._gt_counts  # pylint: disable=protected-access
    rows = {name: (aps.get(c, 0.0 if counts[c] else math.nan),)
            for c, name in enumerate(class_names)}
    no_det = [name for c, name in enumerate(class_names) if counts[c] and c not in aps]
    mean = self.voc.evaluate()['voc/mAP']
    summary = [f'voc/mAP {mean:.4f} ({self.voc.map_type}, IoU > {self.voc.iou_threshold:g}, '
               f'mean over the {len(aps)} classes with ground truth and detections)']
    if no_det:
      summary.append(f'{len(no_det)} classes with ground truth but no detection (AP 0, not '
                     f'in the mean): {", ".join(no_det)}')
    return Report(summary=summary, columns=('AP',), rows=rows,
                  curves={f'VOC IoU>{self.voc.iou_threshold:g}': {
                      class_names[c]: curve for c, curve in curves.items()}},
                  per_class={per_class_key('voc/AP', name): row[0]
                             for name, row in rows.items() if not math.isnan(row[0])})


def dataset_ground_truth(dataset) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """{image id: (boxes, labels, difficult)} of a VOC detx.data.loader.Dataset, from its
  records (images not decoded)."""
  out = {}
  for i in range(len(dataset)):
    ex = dataset.annotations(i)
    out[int(ex['image_id'])] = (ex['boxes'].astype(np.float64), ex['labels'].astype(np.int64),
                                ex['difficult'].astype(bool))
  return out


def dataset_evaluator(config, dataset) -> DatasetVocEvaluator:
  """eval.metric='voc': VOC mAP at IoU 0.5 (eval.map_type '11point', the zoo's numbers,
  or 'integral') on the dataset's boxes: a VOC dataset's difficult flags, a COCO one's
  crowd boxes as difficult."""
  if getattr(dataset, 'name', 'coco') == 'voc':
    ground_truth = dataset_ground_truth(dataset)
  else:
    ground_truth = coco_ground_truth(dataset.annotation_file, dataset.image_ids)
  # eval.bbox_normalized: IoU without the +1 pixel, as Paddle scored models whose boxes are
  # normalised (SSD: is_bbox_normalized; the same IoU as in normalised coordinates).
  return DatasetVocEvaluator(ground_truth, dataset.num_classes, dataset.image_ids,
                             map_type=config.eval.map_type,
                             is_bbox_normalized=bool(config.eval.get('bbox_normalized', False)))
