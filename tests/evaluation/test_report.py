"""The evaluation report (issue 20, item 3): CocoEvaluator.report's per-class AP against
pycocotools' COCOeval run on one category at a time; --step selection; the
precision-recall image (and its absence without matplotlib); and --mode=eval on a
coco_tiny run through detx.main.run: summary, per-class table, a results json that
pycocotools' loadRes accepts, --step=N, the image in the workdir and in TensorBoard."""
import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest

from detx import checkpoint, errors, main
from detx.errors import WorkdirError
from detx.evaluation import report
from detx.evaluation.coco import CocoEvaluator, load_coco, quiet
from tests.evaluation.test_coco import add_in_batches, gt_as_detections
from tests.helpers import tiny_argv


@pytest.fixture(scope='module')
def val_coco(coco_tiny_dir):
  return load_coco(coco_tiny_dir / 'annotations/instances_val2017.json')


def one_category_stats(coco, results, cat, image_ids):
  """(AP, AP50) of one category: COCOeval restricted to it (params.catIds)."""
  from pycocotools.cocoeval import COCOeval
  with quiet():
    ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), 'bbox')
    ev.params.catIds, ev.params.imgIds = [cat], image_ids
    ev.evaluate(), ev.accumulate(), ev.summarize()
  return ev.stats[0], ev.stats[1]


def test_coco_report_per_class_matches_single_category_cocoeval(val_coco):
  coco, cats = val_coco, sorted(val_coco.getCatIds())
  image_ids = sorted(coco.getImgIds())[:40]
  ids, boxes, scores, classes, valid = gt_as_detections(coco, cats, image_ids)
  # classes with an even index: boxes shifted by 30% of their width (IoU ~0.54);
  # scores spread so the curves are not flat
  shift = (classes % 2 == 0) & valid
  width = boxes[..., 2] - boxes[..., 0] + 1
  boxes[..., 0] += np.where(shift, 0.3 * width, 0)
  boxes[..., 2] += np.where(shift, 0.3 * width, 0)
  scores = np.where(valid, np.linspace(0.2, 1.0, scores.size).reshape(scores.shape), 0)
  ev = CocoEvaluator(coco, cats)
  add_in_batches(ev, (ids, boxes, scores, classes, valid))
  metrics = ev.evaluate()
  names = [coco.cats[c]['name'] for c in cats]
  rep = ev.report(names)
  assert rep.columns == ('bbox AP', 'bbox AP50')
  with_gt = {a['category_id'] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_ids,
                                                                    iscrowd=False))}
  assert len(with_gt) > 10
  for k, (cat, name) in enumerate(zip(cats, names)):
    ap, ap50 = rep.rows[name]
    if cat not in with_gt:
      assert math.isnan(ap) and math.isnan(ap50) and f'bbox/AP/{name}' not in rep.per_class
      continue
    want = one_category_stats(coco, ev.results(), cat, image_ids)
    assert (ap, ap50) == pytest.approx(want, abs=1e-12), name
    assert rep.per_class[report.per_class_key('bbox/AP', name)] == ap
    assert ap == pytest.approx(1.0 if k % 2 else 0.1, abs=1e-9 if k % 2 else 0.03), name
    recall, precision = rep.curves['bbox IoU=0.50'][name]
    assert recall.shape == precision.shape == (101,)
    assert np.mean(precision) == pytest.approx(ap50, abs=1e-12)
  # the dataset-wide AP is the mean of the per-class ones
  assert metrics['bbox/AP'] == pytest.approx(np.mean(list(rep.per_class.values())))
  lines = report.table_lines(rep)
  assert lines[0].split() == ['class', 'bbox', 'AP', 'bbox', 'AP50']
  assert len(lines) == 1 + len(with_gt) + 1 and 'not listed' in lines[-1]
  assert report.headline({**metrics, **rep.per_class}) == {
      k: round(v, 4) for k, v in metrics.items() if k.startswith('bbox/AP')}


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
def test_coco_report_and_results_json_with_masks(val_coco, tmp_path):
  """A mask model's report: bbox and segm columns and curves, bbox.json and segm.json
  (RLE) that loadRes accepts; the ground truth as detections scores 1 per class."""
  coco, cats = val_coco, sorted(val_coco.getCatIds())
  ids = [i for i in sorted(coco.getImgIds()) if coco.getAnnIds(imgIds=[i], iscrowd=False)][:6]
  image_ids, boxes, scores, classes, valid = gt_as_detections(coco, cats, ids)
  masks = [[coco.annToRLE(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[i], iscrowd=False))]
           for i in ids]
  masks = [m + [None] * (boxes.shape[1] - len(m)) for m in masks]
  ev = CocoEvaluator(coco, cats, iou_types=('bbox', 'segm'))
  ev.add(image_ids, boxes, scores, classes, valid, masks=masks)
  ev.evaluate()
  rep = ev.report([coco.cats[c]['name'] for c in cats])
  assert rep.columns == ('bbox AP', 'bbox AP50', 'segm AP', 'segm AP50')
  assert set(rep.curves) == {'bbox IoU=0.50', 'segm IoU=0.50'}
  assert sum(l.startswith('segm: Average Precision') for l in rep.summary) == 6
  scored = [v for v in rep.rows.values() if not math.isnan(v[0])]
  assert scored and all(v == pytest.approx((1, 1, 1, 1)) for v in scored)
  assert any(k.startswith('segm/AP/') for k in rep.per_class)
  paths = ev.write_results(tmp_path)
  assert [p.rsplit('/', 1)[1] for p in paths] == ['bbox.json', 'segm.json']
  segm = json.loads((tmp_path / 'segm.json').read_text())
  assert set(segm[0]) == {'image_id', 'category_id', 'segmentation', 'score'}
  with quiet():
    for p in paths:
      assert len(coco.loadRes(p).getAnnIds()) == int(valid.sum())


def _fake_workdir(tmp_path, saved, best_saved=(), evaluated=()):
  for d, steps in (('checkpoints', saved), ('checkpoints_best', best_saved)):
    for s in steps:
      (tmp_path / d / str(s) / 'default').mkdir(parents=True)
  (tmp_path / 'metrics.jsonl').write_text(''.join(
      json.dumps({'step': s, 'bbox/AP': v}) + '\n' for s, v in evaluated))
  return tmp_path


def test_step_selection(tmp_path):
  w = _fake_workdir(tmp_path, saved=(10, 30, 40), best_saved=(20,),
                    evaluated=[(10, 0.2), (20, 0.5), (30, 0.3), (30, 0.1), (50, 0.9)])
  assert checkpoint.select(w, '') == w / 'checkpoints/40'
  assert checkpoint.select(w, 'latest') == w / 'checkpoints/40'
  assert checkpoint.select(w, '30') == w / 'checkpoints/30'
  assert checkpoint.select(w, '20') == w / 'checkpoints_best/20'
  # 50 scored best but is not saved; 30's last evaluation (0.1) counts
  assert checkpoint.select(w, 'best', 'bbox/AP') == w / 'checkpoints_best/20'
  with pytest.raises(WorkdirError, match=r'no checkpoint of step 35 .*steps present: 10, 20, 30, 40$'):
    checkpoint.select(w, '35')
  with pytest.raises(WorkdirError, match='no saved step .* has segm/AP'):
    checkpoint.select(w, 'best', 'segm/AP')
  with pytest.raises(WorkdirError, match='give a step number'):
    checkpoint.select(w, 'last')


def _report_with_curve():
  curve = (np.linspace(0, 1, 101), np.linspace(1, 0.5, 101))
  return report.Report(summary=['x'], columns=('bbox AP',), rows={'a': (0.5,)},
                       curves={'bbox IoU=0.50': {'a': curve}}, per_class={})


def test_curves_image(tmp_path):
  path = tmp_path / 'pr.png'
  assert report.save_curves(_report_with_curve(), path)
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_curves_skipped_in_one_line_without_matplotlib(tmp_path, monkeypatch, capsys):
  for name in [m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.')]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib... fails
  assert not report.save_curves(_report_with_curve(), tmp_path / 'pr.png')
  out = capsys.readouterr().out.splitlines()
  assert out == ['detx: matplotlib is not installed: no precision-recall image '
                 '(pip install matplotlib)']
  assert not (tmp_path / 'pr.png').exists()


def _run(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = main.run(['detx.main', *map(str, argv)])
  return rc, out.getvalue(), err.getvalue()


@pytest.mark.slow  # 13.5 s with the tests' compilation cache warm, ~25 s cold (2-core CPU)
def test_eval_mode_report_on_coco_tiny(coco_tiny_dir, tmp_cache, tmp_path):
  """A two-step tiny YOLOv3 on coco_tiny (80 classes), a checkpoint at each step;
  --mode=eval --step=1 evaluates step 1 on the first 4 val images."""
  workdir = tmp_path / 'run'
  argv = tiny_argv(workdir, coco_tiny_dir, tmp_cache, '--config.data.name=coco',
                   '--config.model.num_classes=80', '--config.data.train_limit=4',
                   '--config.eval.limit=4', '--config.train.steps=2',
                   '--config.train.checkpoint_every=1')
  rc, out, err = _run([*argv, '--mode=train'])
  assert rc == 0, err[-3000:]
  rc, out, err = _run([*argv, '--mode=eval', '--step=1'])
  assert rc == 0, err[-3000:]
  assert f'evaluating {workdir.resolve()}/checkpoints/1 (step 1)' in out
  summary = [l for l in out.splitlines() if l.startswith('bbox: Average ')]
  assert len(summary) == 12 and 'IoU=0.50:0.95 | area=   all | maxDets=100' in summary[0]
  table = out[out.index('\nclass '):].splitlines()[1:]
  assert table[0].split() == ['class', 'bbox', 'AP', 'bbox', 'AP50']
  coco = load_coco(coco_tiny_dir / 'annotations/instances_val2017.json')
  first4 = sorted(coco.getImgIds())[:4]
  gt_names = {coco.cats[a['category_id']]['name'] for a in coco.loadAnns(
      coco.getAnnIds(imgIds=first4, iscrowd=False))}
  end = next(i for i, l in enumerate(table) if l.startswith(('(', 'detx:')))
  rows = {l.rsplit(None, 2)[0] for l in table[1:end]}
  assert gt_names
  assert rows == gt_names
  # the results json: COCO ids of the dataset, xywh boxes, loadRes accepts it
  eval_dir = workdir / 'eval' / '1'
  results = json.loads((eval_dir / 'bbox.json').read_text())
  assert results and {r['image_id'] for r in results} <= set(first4)
  assert {r['category_id'] for r in results} <= set(coco.getCatIds())
  assert set(results[0]) == {'image_id', 'category_id', 'bbox', 'score'}
  with quiet():
    loaded = coco.loadRes(str(eval_dir / 'bbox.json'))
  assert len(loaded.getAnnIds()) == len(results)
  assert (eval_dir / 'report.txt').read_text().splitlines()[1] == summary[0]
  assert (eval_dir / 'pr_curves.png').read_bytes()[:4] == b'\x89PNG'
  events = b''.join(p.read_bytes() for p in (workdir / 'tensorboard').glob('events*'))
  assert b'eval/pr_curves' in events
  row = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()][-1]
  assert row['step'] == 1 and 'bbox/AP' in row
  assert {k for k in row if k.startswith('bbox/AP/')} == {
      report.per_class_key('bbox/AP', n) for n in gt_names}
  # a step that is not saved: one line naming the steps present
  rc, out, err = _run([*argv, '--mode=eval', '--step=7'])
  assert rc == errors.EXIT_USER_ERROR and 'Traceback' not in out + err
  assert [l for l in err.splitlines() if not l.startswith('WARNING:absl')] == [
      f'detx: no checkpoint of step 7 in {workdir}; steps present: 1, 2']
  # only step 1 was evaluated: it is the best
  assert checkpoint.select(workdir, 'best', 'bbox/AP') == workdir / 'checkpoints' / '1'
  rc, out, err = _run([*argv, '--mode=train', '--step=1'])
  assert rc == errors.EXIT_USER_ERROR and 'Traceback' not in out + err
  assert 'detx: --step is for --mode=eval, not --mode=train' in err
