"""eval.backend: faster-coco-eval gives pycocotools' stats (within 1e-4) on coco_tiny,
bbox and segm, for ground truth jittered plus false positives (experiments/rehearsal.py's
detections); skipped where the optional package is absent. An unknown backend, or
the package missing, is one ConfigError line."""
import json

import numpy as np
import pytest

from detx.errors import ConfigError
from detx.evaluation import coco as coco_eval
from detx.evaluation.coco import CocoEvaluator, load_coco
from experiments import rehearsal


def _stats(ann_file, backend, ann):
  ids, boxes, scores, classes = rehearsal.detections(ann, per_image=50)
  gt = load_coco(ann_file)
  ev = CocoEvaluator(ann_file, backend=backend, iou_types=('bbox', 'segm'))
  masks = []
  for b, image_id in enumerate(ids):  # each box filled as its mask
    im = gt.imgs[int(image_id)]
    rows = []
    for x1, y1, x2, y2 in boxes[b]:
      m = np.zeros((im['height'], im['width']), np.uint8)
      m[max(int(y1), 0):max(int(y2) + 1, 0), max(int(x1), 0):max(int(x2) + 1, 0)] = 1
      rows.append(m)
    masks.append(rows)
  for s in range(0, len(ids), 16):
    sl = slice(s, s + 16)
    ev.add(ids[sl], boxes[sl], scores[sl], classes[sl], masks=masks[sl])
  return ev.evaluate(), ev


def test_faster_coco_eval_matches_pycocotools(coco_tiny_dir):
  pytest.importorskip('faster_coco_eval')
  ann_file = coco_tiny_dir / 'annotations/instances_val2017.json'
  ann = json.loads(ann_file.read_text())
  ann['images'] = ann['images'][:10]  # 10 images keep the masks small
  ref, _ = _stats(ann_file, 'pycocotools', ann)
  got, ev = _stats(ann_file, 'faster_coco_eval', ann)
  assert set(got) == set(ref) and len(ref) == 24
  assert 0.05 < ref['bbox/AP'] < 0.9 and 0.01 < ref['segm/AP'] < 0.9  # not trivial
  for k in ref:
    assert abs(got[k] - ref[k]) < 1e-4, (k, got[k], ref[k])
  # The report reads the same precision array and summary lines.
  assert ev.summaries['bbox'][0].startswith(' Average Precision  (AP) @[ IoU=0.50:0.95')


def test_backend_errors(coco_tiny_dir, monkeypatch):
  ann_file = coco_tiny_dir / 'annotations/instances_val2017.json'
  with pytest.raises(ConfigError, match="eval.backend must be one of 'pycocotools'"):
    CocoEvaluator(ann_file, backend='detectron')
  monkeypatch.setitem(__import__('sys').modules, 'faster_coco_eval', None)
  with pytest.raises(ConfigError, match=r"pip install 'detx\[fast-eval\]'"):
    coco_eval.backend_classes('faster_coco_eval')


def test_config_key_reaches_the_evaluator(coco_tiny_dir):
  import types
  from detx import config as cfg
  from detx.evaluation import loop
  config = cfg.load('quickstart')
  assert config.eval.backend == 'pycocotools'
  config.eval.backend = 'detectron'
  ann = json.loads((coco_tiny_dir / 'annotations/instances_val2017.json').read_text())
  dataset = types.SimpleNamespace(
      annotation_file=coco_tiny_dir / 'annotations/instances_val2017.json', name='coco',
      category_ids=sorted(c['id'] for c in ann['categories']), image_ids=[])
  with pytest.raises(ConfigError, match='eval.backend'):
    loop.coco_evaluator(config, dataset)
