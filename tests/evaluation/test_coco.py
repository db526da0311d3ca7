"""detx.evaluation.coco: COCO metrics on real coco_tiny ground truth."""

import json
from pathlib import Path

import numpy as np
import pytest

from detx.evaluation.coco import COCO_STAT_NAMES, CocoEvaluator, load_coco

KEYS = [f'bbox/{n}' for n in COCO_STAT_NAMES]


@pytest.fixture(scope='module')
def val_gt(coco_tiny_dir):
  """(annotation path, COCO object loaded once, sorted category ids)."""
  ann_file = coco_tiny_dir / 'annotations/instances_val2017.json'
  coco = load_coco(ann_file)
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
