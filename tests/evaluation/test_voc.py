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


# ------------------------------------- classes without detections / ground truth, random


@pytest.mark.parametrize('map_type', ['11point', 'integral'])
def test_voc_class_without_detections_and_class_without_gt(map_type):
  """Class 0: TP 0.9, FP 0.8, TP 0.7 over two GT; class 1: GT, no detection (left out of
  the mean, as Paddle's DetectionMAP skips it); class 2: high-scoring detections and no
  GT (left out too: nothing to recall)."""
  ev = _voc(map_type)
  ev.add(GT, [0, 0], None, [GT[0], [300, 300, 320, 320], GT[1]], [0.9, 0.8, 0.7], [0, 0, 0])
  ev.add(GT[:1], [1], None, [[0, 0, 5, 5], GT[0]], [0.99, 0.95], [2, 2])
  # P = [1, 1/2, 2/3], R = [1/2, 1/2, 1]
  expected = {'11point': (6 + 5 * 2 / 3) / 11, 'integral': 0.5 + 0.5 * 2 / 3}[map_type]
  assert ev.class_aps() == {0: pytest.approx(expected)}
  assert ev.evaluate()['voc/mAP'] == pytest.approx(expected)
  recall, precision = ev.class_curves()[0]
  np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
  np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])


def test_dataset_voc_report_per_class():
  report = pytest.importorskip('detx.evaluation.report')
  del report
  gt = {1: (GT, np.array([0, 1]), np.array([False, False])),
        2: (GT[:1], np.array([0]), np.array([True]))}
  ev = DatasetVocEvaluator(gt, 3)
  # image 1: class 0 found, class 1 missed, a class-2 detection (no class-2 GT anywhere)
  ev.add([1], GT[None, :1], [[0.9]], [[0]])
  ev.add([2], np.array([[GT[0], GT[1]]]), [[0.8, 0.7]], [[0, 2]])
  assert ev.evaluate() == {'voc/mAP': 1.0}  # the difficult GT of image 2 is ignored
  rep = ev.report(['cat', 'dog', 'pottedplant'])
  assert rep.rows['cat'] == (1.0,) and rep.rows['dog'] == (0.0,)
  assert np.isnan(rep.rows['pottedplant'][0])
  assert rep.per_class == {'voc/AP/cat': 1.0, 'voc/AP/dog': 0.0}
  assert 'dog' in rep.summary[1] and rep.summary[0].startswith('voc/mAP 1.0000 (11point')
  assert list(rep.curves.values())[0].keys() == {'cat'}


def _reference_map(images, num_classes, use_07=True):
  """An independent VOC mAP in the devkit's shape (voc_eval.py): per class, every
  detection of the dataset sorted by score, each matched in that order to the unused
  same-class GT of its image with the highest IoU (+1 pixel areas), > 0.5 a TP, a
  difficult match ignored; AP from the precision envelope at 11 recall points (or the
  area under the raw curve: Paddle's 'integral'); classes without GT or detections
  skipped, as Paddle does."""
  aps = []
  for c in range(num_classes):
    dets = [(score, i, box) for i, (_, _, _, db, ds, dl) in enumerate(images)
            for box, score, label in zip(db, ds, dl) if label == c]
    n_gt = sum(int(((gl == c) & ~gd).sum()) for gb, gl, gd, *_ in images)
    if not n_gt or not dets:
      continue
    used = [np.zeros(len(gl), bool) for _, gl, *_ in images]
    tp, fp = [], []
    for score, i, box in sorted(dets, key=lambda d: -d[0]):
      gb, gl, gd = images[i][:3]
      best, best_iou = -1, 0.5
      for g in range(len(gl)):
        if gl[g] != c:
          continue
        iw = min(box[2], gb[g][2]) - max(box[0], gb[g][0]) + 1
        ih = min(box[3], gb[g][3]) - max(box[1], gb[g][1]) + 1
        if iw <= 0 or ih <= 0:
          continue
        union = ((box[2] - box[0] + 1) * (box[3] - box[1] + 1) +
                 (gb[g][2] - gb[g][0] + 1) * (gb[g][3] - gb[g][1] + 1) - iw * ih)
        if iw * ih / union > best_iou:
          best, best_iou = g, iw * ih / union
      if best >= 0 and gd[best]:
        continue
      hit = best >= 0 and not used[i][best]
      if hit:
        used[i][best] = True
      tp.append(float(hit))
      fp.append(float(not hit))
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / n_gt, tp / (tp + fp)
    if use_07:
      aps.append(np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0
                          for t in np.arange(0, 1.1, 0.1)]))
    else:
      aps.append(float(np.sum(np.diff(np.concatenate([[0.0], rec])) * prec)))
  return float(np.mean(aps)) if aps else 0.0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_voc_random_case_equals_reference(seed):
  """50 images, 4 classes, GT with 20% difficult, detections jittered from GT plus
  random boxes, distinct random scores: VocEvaluator == _reference_map above."""
  rng = np.random.default_rng(seed)
  images = []
  ev11, evi = VocEvaluator(4), VocEvaluator(4, map_type='integral')
  scores = iter(rng.permutation(5000) / 5000.0)
  for _ in range(50):
    g = int(rng.integers(0, 5))
    xy = rng.uniform(0, 200, (g, 2))
    gb = np.concatenate([xy, xy + rng.uniform(10, 80, (g, 2))], 1).round()
    gl, gd = rng.integers(0, 3, g), rng.random(g) < 0.2  # class 3 never has GT
    keep = rng.random(g) < 0.8
    db = gb[keep] + rng.normal(0, 6, (int(keep.sum()), 4)).round()
    dl = np.where(rng.random(int(keep.sum())) < 0.9, gl[keep], rng.integers(0, 4, int(keep.sum())))
    k = int(rng.integers(0, 4))
    xy = rng.uniform(0, 200, (k, 2))
    db = np.concatenate([db, np.concatenate([xy, xy + rng.uniform(10, 80, (k, 2))], 1)])
    dl = np.concatenate([dl, rng.integers(0, 4, k)])
    ds = np.array([next(scores) for _ in range(len(dl))])
    images.append((gb, gl, gd, db, ds, dl))
    ev11.add(gb, gl, gd, db, ds, dl)
    evi.add(gb, gl, gd, db, ds, dl)
  ref11, refi = _reference_map(images, 4), _reference_map(images, 4, use_07=False)
  assert 0.2 < ref11 < 0.95
  assert ev11.evaluate()['voc/mAP'] == pytest.approx(ref11, abs=1e-12)
  assert evi.evaluate()['voc/mAP'] == pytest.approx(refi, abs=1e-12)


def test_dataset_evaluator_on_voc_dataset(voc_tiny_dir, tmp_cache):
  """eval.metric='voc' on a VOC dataset reads its records' difficult flags: its ground
  truth (non-difficult boxes) as detections scores 1.0; difficult boxes detected or not
  change nothing; dropping every person detection drops person's AP to 0."""
  from detx import config as cfg
  from detx.data import loader
  from detx.evaluation import voc
  c = cfg.default()
  c.eval.map_type = 'integral'
  dataset = loader.Dataset(voc_tiny_dir, 'test', cache_dir=str(tmp_cache), name='voc')
  ev = voc.dataset_evaluator(c, dataset)
  assert ev.voc.map_type == 'integral'
  gt = voc.dataset_ground_truth(dataset)
  assert sum(int(d.sum()) for _, _, d in gt.values()) == 71  # SOURCE.md
  ids = sorted(gt)
  for keep_difficult, person in ((True, True), (False, True), (True, False)):
    ev.reset()
    image_ids, boxes, scores, classes, valid = _detections(gt, ids, keep_difficult)
    if not person:
      valid &= classes != voc_names().index('person')
    ev.add(image_ids, boxes, scores, classes, valid)
    # without person detections person is left out of the mean (Paddle), AP 0 reported
    assert ev.evaluate()['voc/mAP'] == 1.0
    assert (0 if person else 1) == len(ev.voc.class_aps().keys() ^ set(range(20)))
    if not person and pytest.importorskip('detx.evaluation.report'):
      assert ev.report(dataset.category_names).per_class['voc/AP/person'] == 0.0


def voc_names():
  from detx.data.voc import VOC_CLASSES
  return list(VOC_CLASSES)


def test_eval_loop_on_voc_data_logs_per_class_ap(voc_tiny_dir, tmp_path):
  """evaluation.evaluate with eval.metric='voc' on voc_tiny's test split (first 8
  images), fed by an eval step that returns each image's ground truth (difficult boxes
  included): voc/mAP 1.0 and one voc/AP/<class> per class with ground truth there."""
  from detx import evaluation, sharding
  from detx.data import loader
  from detx.evaluation import voc
  from detx.models.base import build_model
  from tests.helpers import tiny_config
  c = tiny_config(tmp_path, **{'data.name': 'voc', 'data.dir': str(voc_tiny_dir),
                               'eval.metric': 'voc', 'eval.limit': 8, 'eval.batch_size': 3,
                               'model.num_classes': 20})
  dataset = loader.build(c, c.eval.split)
  gt = voc.dataset_ground_truth(dataset)
  ids = iter(dataset.image_ids)

  def step(variables, batch, k=32):
    n = batch['image'].shape[0]
    out = dict(boxes=np.zeros((n, k, 4), np.float32), scores=np.zeros((n, k), np.float32),
               classes=np.zeros((n, k), np.int32), valid=np.zeros((n, k), bool))
    for i in range(n):
      image_id = next(ids, None)
      if image_id is not None:
        boxes, labels, _ = gt[int(image_id)]
        m = min(len(boxes), k)
        out['boxes'][i, :m], out['classes'][i, :m] = boxes[:m], labels[:m]
        out['scores'][i, :m], out['valid'][i, :m] = 1.0, True
    return out

  module, _ = build_model(c)
  result = evaluation.evaluate(c, module, None, sharding.make_mesh(), step, dataset=dataset)
  with_gt = {voc_names()[int(l)] for _, labels, d in gt.values() for l in labels[~d]}
  assert result['voc/mAP'] == 1.0 and result['eval/images'] == 8
  assert {k for k in result if k.startswith('voc/AP/')} == {f'voc/AP/{n}' for n in with_gt}


def test_coco_metric_on_voc_data_is_one_line(voc_tiny_dir, tmp_path):
  from detx import config as cfg
  from detx import evaluation
  from detx.data import loader
  from detx.errors import ConfigError
  c = cfg.override(cfg.default(), {'data.name': 'voc', 'data.dir': str(voc_tiny_dir),
                                   'data.cache_dir': str(tmp_path / 'tfds'),
                                   'eval.limit': 2, 'eval.metric': 'coco'})
  with pytest.raises(ConfigError, match="needs a COCO-format dataset.*eval.metric=voc"):
    evaluation.make_evaluator(c, loader.build(c, c.eval.split))
