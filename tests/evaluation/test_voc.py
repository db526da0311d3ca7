"""detx.evaluation.voc: VOC mAP on hand-built cases with known answers and on voc_tiny;
DatasetVocEvaluator on coco_tiny ground truth."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from detx.evaluation.voc import (DatasetVocEvaluator, VocEvaluator, coco_ground_truth, voc_ap,
                                 voc_box_iou)

SHARED_DATA = Path(__file__).resolve().parents[3] / 'shared/data'


@pytest.fixture(scope='module')
def voc_tiny_dir():
  path = SHARED_DATA / 'voc_tiny'
  if not path.is_dir():
    pytest.skip(f'{path} is absent')
  return path


def _voc(map_type='11point', **kwargs):
  return VocEvaluator(num_classes=3, map_type=map_type, **kwargs)


GT = np.array([[10, 10, 49, 49], [100, 100, 159, 139]], np.float64)


@pytest.mark.parametrize('map_type', ['11point', 'integral'])
def test_voc_perfect(map_type):
  ev = _voc(map_type)
  ev.add(GT, [0, 1], [0, 0], GT, [0.9, 0.8], [0, 1])
  ev.add(GT[:1], [2], None, GT[:1], [0.3], [2])
  assert ev.evaluate() == {'voc/mAP': 1.0}


@pytest.mark.parametrize('map_type', ['11point', 'integral'])
def test_voc_fp_above_tp(map_type):
  # FP (0.9) then TP (0.8): precision [0, 1/2], recall [0, 1] -> AP 1/2 either way.
  ev = _voc(map_type)
  ev.add(GT[:1], [0], None, [[200, 200, 220, 220], GT[0]], [0.9, 0.8], [0, 0])
  assert ev.evaluate()['voc/mAP'] == pytest.approx(0.5)


def test_voc_fp_below_tp_is_harmless():
  ev = _voc()
  ev.add(GT[:1], [0], None, [[200, 200, 220, 220], GT[0]], [0.1, 0.8], [0, 0])
  assert ev.evaluate()['voc/mAP'] == 1.0


@pytest.mark.parametrize('map_type,expected', [
    ('11point', (6 + 5 * 2 / 3) / 11),  # max precision 1 up to recall .5, then 2/3
    ('integral', 0.5 * 1 + 0.5 * 2 / 3),
])
def test_voc_duplicate_is_fp_and_11point_vs_integral(map_type, expected):
  # TP 0.9, duplicate of it 0.8 (FP), TP 0.7: P = [1, 1/2, 2/3], R = [1/2, 1/2, 1].
  ev = _voc(map_type)
  dup = GT[0] + [1, 1, 1, 1]
  ev.add(GT, [0, 0], None, [GT[0], dup, GT[1]], [0.9, 0.8, 0.7], [0, 0, 0])
  assert ev.evaluate()['voc/mAP'] == pytest.approx(expected)


def test_voc_order_across_images_by_score():
  # The same as above with the detections spread over images.
  ev = _voc('integral')
  ev.add(GT[:1], [0], None, [GT[1]], [0.7], [0])  # FP in image 1 (no overlap)
  ev.add(GT[1:], [0], None, [GT[1]], [0.9], [0])  # TP
  assert ev.evaluate()['voc/mAP'] == pytest.approx(0.5 * 1.0)


def test_voc_difficult():
  boxes = GT
  labels = [0, 0]
  difficult = [0, 1]
  # A detection on the difficult box is ignored: AP stays 1 with it scored highest.
  ev = _voc()
  ev.add(boxes, labels, difficult, [GT[1], GT[0]], [0.95, 0.9], [0, 0])
  assert ev.evaluate()['voc/mAP'] == 1.0
  assert ev._gt_counts[0] == 1
  # Missing the difficult box costs nothing by default ...
  ev = _voc()
  ev.add(boxes, labels, difficult, [GT[0]], [0.9], [0])
  assert ev.evaluate()['voc/mAP'] == 1.0
  # ... but with evaluate_difficult it is a counted GT: recall 1/2 -> 6/11.
  ev = _voc(evaluate_difficult=True)
  ev.add(boxes, labels, difficult, [GT[0]], [0.9], [0])
  assert ev.evaluate()['voc/mAP'] == pytest.approx(6 / 11)
  # A duplicate on a difficult box is still ignored, not FP.
  ev = _voc()
  ev.add(boxes, labels, difficult, [GT[1], GT[1], GT[0]], [0.95, 0.94, 0.5], [0, 0, 0])
  assert ev.evaluate()['voc/mAP'] == 1.0
  # Only difficult GT and only detections on it: the class has no counted GT.
  ev = _voc()
  ev.add(GT[1:], [1], [1], [GT[1]], [0.9], [1])
  assert ev.evaluate()['voc/mAP'] == 0.0 and ev.class_aps() == {}


def test_voc_classes_averaged_need_gt_and_detections():
  ev = _voc()
  # class 0 perfect; class 1 has GT but no detection; class 2 detections, no GT.
  ev.add(GT, [0, 1], None, [GT[0], [0, 0, 5, 5]], [0.9, 0.9], [0, 2])
  assert ev.class_aps() == {0: 1.0}
  assert ev.evaluate()['voc/mAP'] == 1.0


def test_voc_wrong_class_and_threshold():
  ev = _voc()
  ev.add(GT[:1], [0], None, [GT[0]], [0.9], [1])  # class 1: FP, class 0: no det
  ev.add(GT[:1], [1], None, [GT[0]], [0.9], [1])  # class 1: TP
  assert ev.class_aps() == {1: pytest.approx(0.5)}
  # IoU exactly 0.5 (+1 areas: 40x20 inside 40x40) is not a match (strict >).
  ev = _voc()
  ev.add(GT[:1], [0], None, [[10, 10, 49, 29]], [0.9], [0])
  assert voc_box_iou([10, 10, 49, 29], GT[:1])[0] == 0.5
  assert ev.evaluate()['voc/mAP'] == 0.0


def test_voc_plus_one_areas():
  gt = np.array([[0, 0, 2, 2]], np.float64)
  det = [0, 0, 2, 1]
  assert voc_box_iou(det, gt)[0] == pytest.approx(6 / 9)  # 3x2 over 3x3 pixels
  assert voc_box_iou(det, gt, is_bbox_normalized=True)[0] == pytest.approx(0.5)
  assert voc_box_iou([3, 0, 5, 2], gt)[0] == 0.0  # disjoint
  assert voc_box_iou([2, 0, 5, 2], gt)[0] == 0.0  # touching edges count as disjoint
  for normalized, expected in [(False, 1.0), (True, 0.0)]:
    ev = _voc(is_bbox_normalized=normalized)
    ev.add(gt, [0], None, [det], [0.9], [0])
    assert ev.evaluate()['voc/mAP'] == expected


def test_voc_padded_inputs_and_validation():
  ev = _voc()
  ev.add(np.concatenate([GT, np.zeros((3, 4))]), [0, 1, 0, 0, 0], None,
         np.concatenate([GT, np.ones((2, 4))]), [0.9, 0.8, 0.99, 0.99], [0, 1, 0, 0],
         gt_valid=[1, 1, 0, 0, 0], det_valid=[1, 1, 0, 0])
  assert ev.evaluate()['voc/mAP'] == 1.0
  assert ev._gt_counts.tolist() == [1, 1, 0]
  with pytest.raises(ValueError):
    ev.add(GT, [0, 3], None, GT, [0.9, 0.8], [0, 1])
  with pytest.raises(ValueError):
    VocEvaluator(3, map_type='area')
  ev.reset()
  assert ev.evaluate() == {'voc/mAP': 0.0}


def test_voc_ap_function():
  recall = np.array([0.5, 0.5, 1.0])
  precision = np.array([1.0, 0.5, 2 / 3])
  assert voc_ap(recall, precision, '11point') == pytest.approx((6 + 5 * 2 / 3) / 11)
  assert voc_ap(recall, precision, 'integral') == pytest.approx(5 / 6)
  assert voc_ap([0.3], [1.0], '11point') == pytest.approx(4 / 11)  # t = 0 .. 0.3
  assert voc_ap([], [], '11point') == 0.0
  with pytest.raises(ValueError):
    voc_ap(recall, precision, 'bogus')


def test_voc_tiny_ground_truth_as_detections(voc_tiny_dir):
  root = voc_tiny_dir / 'VOCdevkit/VOC2007'
  ids = (root / 'ImageSets/Main/test.txt').read_text().split()
  names = sorted({o.findtext('name') for i in ids
                  for o in ET.parse(root / f'Annotations/{i}.xml').iter('object')})
  assert len(names) == 20
  ev_perfect = VocEvaluator(20)
  ev_shifted = VocEvaluator(20, map_type='integral')
  n_difficult = 0
  for i in ids:
    objs = list(ET.parse(root / f'Annotations/{i}.xml').iter('object'))
    boxes = np.array([[float(o.find('bndbox').findtext(k))
                       for k in ('xmin', 'ymin', 'xmax', 'ymax')] for o in objs])
    labels = np.array([names.index(o.findtext('name')) for o in objs])
    difficult = np.array([int(o.findtext('difficult') or 0) for o in objs])
    n_difficult += difficult.sum()
    scores = np.linspace(1.0, 0.5, len(objs))
    ev_perfect.add(boxes, labels, difficult, boxes, scores, labels)
    width = boxes[:, 2] - boxes[:, 0] + 1
    shifted = boxes + np.stack([width * 0.4, 0 * width, width * 0.4, 0 * width], 1)
    ev_shifted.add(boxes, labels, difficult, shifted, scores, labels)
  assert n_difficult > 0
  assert ev_perfect.evaluate()['voc/mAP'] == 1.0
  # 40% shift: IoU with its own box 0.6 / 1.4 < 0.5; almost everything is an FP
  # (a few shifted boxes land on a neighbour of the same class).
  assert ev_shifted.evaluate()['voc/mAP'] < 0.02


# ------------------------------------------------------- DatasetVocEvaluator (COCO data)


@pytest.fixture(scope='module')
def coco_val(coco_tiny_dir):
  """(annotation path, pycocotools COCO, sorted category ids, ground truth)."""
  from detx.evaluation.coco import load_coco
  ann_file = coco_tiny_dir / 'annotations/instances_val2017.json'
  coco = load_coco(ann_file)
  return ann_file, coco, sorted(coco.getCatIds()), coco_ground_truth(ann_file)


def test_coco_ground_truth_reads_boxes_as_paddle(coco_val):
  _, coco, cat_ids, gt = coco_val
  assert sorted(gt) == sorted(coco.getImgIds())
  n_crowd = 0
  for image_id, (boxes, labels, difficult) in gt.items():
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    assert len(boxes) == len(labels) == len(difficult) == len(anns)
    im = coco.imgs[image_id]
    for a, box, label, diff in zip(anns, boxes, labels, difficult):
      x, y, w, h = a['bbox']
      expected = [x, y, min(x + w - 1, im['width'] - 1), min(y + h - 1, im['height'] - 1)]
      np.testing.assert_allclose(box, expected, atol=1e-3)
      assert cat_ids[label] == a['category_id'] and diff == bool(a['iscrowd'])
      n_crowd += diff
  assert n_crowd > 0, 'coco_tiny val should hold crowd regions'
  some = sorted(gt)[:3]
  assert sorted(coco_ground_truth(coco_val[0], some)) == some


def _detections(gt, image_ids, keep_crowd=True, k=64):
  """The ground truth as a padded detection batch (crowd boxes included or not)."""
  b = len(image_ids)
  boxes, scores = np.zeros((b, k, 4)), np.zeros((b, k))
  classes, valid = np.zeros((b, k), np.int64), np.zeros((b, k), bool)
  for i, image_id in enumerate(image_ids):
    gb, gl, gd = gt[image_id]
    sel = np.nonzero(keep_crowd | ~gd)[0][:k]
    n = len(sel)
    boxes[i, :n], classes[i, :n], valid[i, :n] = gb[sel], gl[sel], True
    scores[i, :n] = np.linspace(1.0, 0.5, n)
  return np.asarray(image_ids), boxes, scores, classes, valid


@pytest.mark.parametrize('map_type', ['11point', 'integral'])
def test_dataset_voc_ground_truth_as_detections(coco_val, map_type):
  _, _, cat_ids, gt = coco_val
  ids = sorted(gt)
  # Crowd boxes are difficult: detecting them or not changes nothing.
  for keep_crowd in (True, False):
    ev = DatasetVocEvaluator(gt, len(cat_ids), map_type=map_type)
    batch = _detections(gt, ids, keep_crowd)
    for s in range(0, len(ids), 8):
      ev.add(*(x[s:s + 8] for x in batch))
    assert ev.evaluate() == {'voc/mAP': 1.0}


def test_dataset_voc_images_without_detections_count(coco_val):
  _, _, cat_ids, gt = coco_val
  ids = sorted(gt)
  ev = DatasetVocEvaluator(gt, len(cat_ids), image_ids=ids)
  half = _detections(gt, ids[:len(ids) // 2])
  # Batch padding: an unknown id with no valid slot is ignored.
  image_ids, boxes, scores, classes, valid = half
  pad = lambda x: np.concatenate([x, x[:1]])  # noqa: E731
  ev.add(np.append(image_ids, -1), pad(boxes), pad(scores), pad(classes),
         np.concatenate([valid, np.zeros_like(valid[:1])]))
  partial = ev.evaluate()['voc/mAP']
  assert 0.2 < partial < 0.95
  assert ev.evaluate()['voc/mAP'] == partial  # evaluating twice changes nothing
  with pytest.raises(ValueError, match='twice'):
    ev.add(*(x[:1] for x in half))
  with pytest.raises(ValueError, match='not among'):
    ev.add([-1], *(x[:1] for x in half[1:]))
  # Restricted to the images that got detections, it is perfect again.
  ev = DatasetVocEvaluator(gt, len(cat_ids), image_ids=ids[:len(ids) // 2])
  ev.add(*half)
  assert ev.evaluate() == {'voc/mAP': 1.0}
  with pytest.raises(ValueError, match='no ground truth'):
    DatasetVocEvaluator(gt, len(cat_ids), image_ids=[-5])
