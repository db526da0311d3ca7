"""Tests for detx.evaluate: COCO metrics on real coco_tiny ground truth, VOC mAP on
hand-built cases with known answers and on voc_tiny."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from detx.evaluate import (COCO_STAT_NAMES, CocoEvaluator, VocEvaluator, voc_ap,
                           voc_box_iou)

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared/data'
KEYS = [f'bbox/{n}' for n in COCO_STAT_NAMES]


@pytest.fixture(scope='module')
def coco_tiny_dir():
  path = SHARED_DATA / 'coco_tiny'
  if not path.is_dir():
    pytest.skip(f'{path} is absent')
  return path


@pytest.fixture(scope='module')
def voc_tiny_dir():
  path = SHARED_DATA / 'voc_tiny'
  if not path.is_dir():
    pytest.skip(f'{path} is absent')
  return path


@pytest.fixture(scope='module')
def val_gt(coco_tiny_dir):
  """(annotation path, COCO object loaded once, sorted category ids)."""
  from detx.evaluate import _load_coco
  ann_file = coco_tiny_dir / 'annotations/instances_val2017.json'
  coco = _load_coco(ann_file)
  return ann_file, coco, sorted(coco.getCatIds())


def gt_as_detections(coco, cat_ids, image_ids, include_crowd=False, shift=0.0,
                     drop_class=False):
  """Ground truth as a padded detection batch in legacy xyxy (x2 = x + w - 1)."""
  cat_index = {c: i for i, c in enumerate(cat_ids)}
  per_image = []
  for image_id in image_ids:
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id],
                                        iscrowd=None if include_crowd else False))
    rows = []
    for a in anns:
      x, y, w, h = a['bbox']
      dx = shift * w
      rows.append((x + dx, y, x + dx + w - 1, y + h - 1, cat_index[a['category_id']]))
    per_image.append(rows)
  k = max(1, max(len(r) for r in per_image))
  b = len(image_ids)
  boxes = np.zeros((b, k, 4), np.float32)
  classes = np.zeros((b, k), np.int32)
  valid = np.zeros((b, k), bool)
  for i, rows in enumerate(per_image):
    for j, (x1, y1, x2, y2, c) in enumerate(rows):
      boxes[i, j] = (x1, y1, x2, y2)
      classes[i, j] = (c + 1) % len(cat_ids) if drop_class else c
      valid[i, j] = True
  scores = np.where(valid, 1.0, 0.0).astype(np.float32)
  # Garbage in invalid slots must be ignored.
  boxes[~valid] = 5.0
  return np.asarray(image_ids, np.int64), boxes, scores, classes, valid


def add_in_batches(evaluator, batch, size=16, **kwargs):
  image_ids, boxes, scores, classes, valid = batch
  for s in range(0, len(image_ids), size):
    sl = slice(s, s + size)
    evaluator.add(image_ids[sl], boxes[sl], scores[sl], classes[sl], valid[sl],
                  **kwargs)


# ----------------------------------------------------------------------------- COCO


def test_coco_perfect_detections(val_gt):
  ann_file, coco, cat_ids = val_gt
  image_ids = sorted(coco.getImgIds())
  ev = CocoEvaluator(ann_file, cat_ids)  # loads the json itself
  add_in_batches(ev, gt_as_detections(coco, cat_ids, image_ids))
  metrics = ev.evaluate()
  assert list(metrics) == KEYS
  assert all(type(v) is float for v in metrics.values())
  assert metrics['bbox/AP'] > 0.99
  assert metrics['bbox/AP50'] > 0.99
  assert metrics['bbox/AR100'] > 0.99
  assert ev.image_ids == image_ids


def test_coco_crowd_boxes_as_detections_are_ignored(val_gt):
  """Detections on crowd regions match them and are ignored, as in pycocotools."""
  _, coco, cat_ids = val_gt
  assert coco.getAnnIds(iscrowd=True), 'coco_tiny val should hold crowd regions'
  image_ids = sorted(coco.getImgIds())
  ev = CocoEvaluator(coco, cat_ids)
  add_in_batches(ev, gt_as_detections(coco, cat_ids, image_ids, include_crowd=True))
  assert ev.evaluate()['bbox/AP'] > 0.99


def test_coco_legacy_box_conversion(val_gt):
  _, coco, cat_ids = val_gt
  image_id = sorted(coco.getImgIds())[0]
  ev = CocoEvaluator(coco, cat_ids)
  ev.add([image_id], [[[10., 20., 19., 29.], [0, 0, 0, 0]]], [[0.75, 0.1]],
         [[3, 0]], [[True, False]])
  (res,) = ev.results('bbox')
  assert res == {'image_id': image_id, 'category_id': cat_ids[3],
                 'bbox': [10.0, 20.0, 10.0, 10.0], 'score': 0.75}


def test_coco_perturbed_detections_score_lower(val_gt):
  _, coco, cat_ids = val_gt
  image_ids = sorted(coco.getImgIds())
  results = {}
  for name, kwargs in [('shift', dict(shift=0.3)), ('class', dict(drop_class=True))]:
    ev = CocoEvaluator(coco, cat_ids)
    add_in_batches(ev, gt_as_detections(coco, cat_ids, image_ids, **kwargs))
    results[name] = ev.evaluate()
  # A 30% horizontal shift keeps IoU = 0.7 / 1.3 ~ 0.54: a match at IoU 0.5 only,
  # one of the ten thresholds.
  assert 0.08 < results['shift']['bbox/AP'] < 0.12
  assert results['shift']['bbox/AP50'] > 0.9
  assert results['shift']['bbox/AP75'] < 0.05
  assert results['class']['bbox/AP'] < 0.01


def test_coco_image_subset(val_gt):
  _, coco, cat_ids = val_gt
  all_ids = sorted(coco.getImgIds())
  subset = all_ids[:10]
  batch = gt_as_detections(coco, cat_ids, all_ids, shift=0.2)

  # Restricting in the constructor ignores detections on other images...
  ev = CocoEvaluator(coco, cat_ids, image_ids=subset)
  add_in_batches(ev, batch)
  restricted = ev.evaluate()
  assert ev.coco_evals['bbox'].params.imgIds == subset
  # ... and equals evaluating only the detections of those images.
  ev_seen = CocoEvaluator(coco, cat_ids)
  add_in_batches(ev_seen, tuple(x[:10] for x in batch))
  assert ev_seen.image_ids == subset
  assert ev_seen.evaluate() == restricted
  everything = CocoEvaluator(coco, cat_ids)
  add_in_batches(everything, batch)
  assert everything.evaluate()['bbox/AP'] != restricted['bbox/AP']


def test_coco_images_without_detections_count(val_gt):
  """Images seen in add with no valid slot are evaluated (their GT is missed);
  unknown ids with no valid slot (batch padding) are ignored."""
  _, coco, cat_ids = val_gt
  ids = sorted(coco.getImgIds())
  with_gt = [i for i in ids if coco.getAnnIds(imgIds=[i], iscrowd=False)][:4]
  image_ids, boxes, scores, classes, valid = gt_as_detections(coco, cat_ids, with_gt)
  valid[2:] = False
  image_ids = np.concatenate([image_ids, [-1]])
  pad = lambda x: np.concatenate([x, x[:1]])  # noqa: E731
  ev = CocoEvaluator(coco, cat_ids)
  ev.add(image_ids, pad(boxes), pad(scores), pad(classes),
         np.concatenate([valid, np.zeros_like(valid[:1])]))
  assert ev.image_ids == with_gt
  metrics = ev.evaluate()
  assert 0.0 < metrics['bbox/AR100'] < 0.9
  with pytest.raises(ValueError, match='not in the annotations'):
    ev.add([-1], boxes[:1], scores[:1], classes[:1], valid[:1])


def test_coco_zero_detections(val_gt):
  _, coco, cat_ids = val_gt
  ids = sorted(coco.getImgIds())[:3]
  ev = CocoEvaluator(coco, cat_ids)
  assert ev.evaluate() == {k: 0.0 for k in KEYS}
  ev.add(ids, np.zeros((3, 5, 4)), np.zeros((3, 5)), np.zeros((3, 5), int),
         np.zeros((3, 5), bool))
  assert ev.evaluate() == {k: 0.0 for k in KEYS}
  ev2 = CocoEvaluator(coco, cat_ids, iou_types=('bbox', 'segm'))
  assert ev2.evaluate() == {**{k: 0.0 for k in KEYS},
                            **{f'segm/{n}': 0.0 for n in COCO_STAT_NAMES}}


def test_coco_results_json_round_trip(val_gt, tmp_path):
  from pycocotools.cocoeval import COCOeval
  _, coco, cat_ids = val_gt
  image_ids = sorted(coco.getImgIds())
  batch = gt_as_detections(coco, cat_ids, image_ids, shift=0.1)
  image_ids_arr, boxes, scores, classes, valid = batch
  rng = np.random.default_rng(0)
  scores = np.where(valid, rng.uniform(0.05, 1.0, valid.shape), 0).astype(np.float32)
  ev = CocoEvaluator(coco, cat_ids)
  add_in_batches(ev, (image_ids_arr, boxes, scores, classes, valid))
  metrics = ev.evaluate()
  path = ev.write_json(tmp_path / 'out/bbox.json')
  loaded = json.loads(Path(path).read_text())
  assert loaded == ev.results('bbox')
  assert set(loaded[0]) == {'image_id', 'category_id', 'bbox', 'score'}
  assert len(loaded) == int(valid.sum())

  import contextlib
  import io
  with contextlib.redirect_stdout(io.StringIO()):
    coco_eval = COCOeval(coco, coco.loadRes(str(path)), 'bbox')
    coco_eval.params.imgIds = image_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  assert [metrics[k] for k in KEYS] == pytest.approx(list(coco_eval.stats), abs=1e-12)
  # Evaluating again gives the same numbers (loadRes must not alter our results).
  assert ev.evaluate() == metrics
  assert ev.results('bbox') == loaded


def test_coco_quiet_unless_verbose(val_gt, capsys):
  _, coco, cat_ids = val_gt
  ids = sorted(coco.getImgIds())[:8]
  ev = CocoEvaluator(coco, cat_ids)
  add_in_batches(ev, gt_as_detections(coco, cat_ids, ids))
  ev.evaluate()
  assert capsys.readouterr().out == ''
  ev.verbose = True
  ev.evaluate()
  assert 'Average Precision' in capsys.readouterr().out


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
def test_coco_segm_from_gt_masks(val_gt):
  _, coco, cat_ids = val_gt
  ids = [i for i in sorted(coco.getImgIds())
         if coco.getAnnIds(imgIds=[i], iscrowd=False)][:12]
  image_ids, boxes, scores, classes, valid = gt_as_detections(coco, cat_ids, ids)
  masks = []
  for b, image_id in enumerate(ids):
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    per = [coco.annToRLE(a) for a in anns]
    if per:  # one as a binary array, the rest as RLE dicts
      per[0] = coco.annToMask(anns[0])
    masks.append(per + [None] * (boxes.shape[1] - len(per)))
  ev = CocoEvaluator(coco, cat_ids, iou_types=('bbox', 'segm'))
  ev.add(image_ids, boxes, scores, classes, valid, masks=masks)
  metrics = ev.evaluate()
  assert set(metrics) == set(KEYS) | {f'segm/{n}' for n in COCO_STAT_NAMES}
  assert metrics['segm/AP'] > 0.99 and metrics['bbox/AP'] > 0.99
  assert isinstance(ev.results('segm')[0]['segmentation']['counts'], str)
  json.dumps(ev.results('segm'))


# ------------------------------------------------------------------------------ VOC


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
