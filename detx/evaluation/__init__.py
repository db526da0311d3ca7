"""Evaluation: the loop (loop.py) and the evaluators it feeds.

  from detx import evaluation
  results = evaluation.evaluate(config, module, variables, mesh)   # eval.metric on eval.split
  results = evaluation.evaluate_checkpoint(config, workdir)        # the latest checkpoint

coco.py    CocoEvaluator (pycocotools COCOeval: bbox, segm)
voc.py     VocEvaluator (Paddle's DetectionMAP: 11point / integral), DatasetVocEvaluator
report.py  Report (summary lines, per-class table, PR curves: evaluator.report(names)),
           publish (the --mode=eval report in WORKDIR/eval/<step>/)
results.py detections -> COCO results json (Paddle's bbox2out; masks as RLE), shared
           with detx.predict
loop.py    make_eval_step, evaluate, evaluate_checkpoint, restore_state; EVALUATORS:
           eval.metric -> evaluator
"""
from detx.evaluation.coco import COCO_STAT_NAMES, CocoEvaluator
from detx.evaluation.loop import (EVALUATORS, evaluate, evaluate_checkpoint, make_eval_step,
                                  make_evaluator, restore_state)
from detx.evaluation.report import Report, headline, publish
from detx.evaluation.results import coco_results
from detx.evaluation.voc import DatasetVocEvaluator, VocEvaluator, voc_ap, voc_box_iou

__all__ = [
    'COCO_STAT_NAMES', 'CocoEvaluator', 'DatasetVocEvaluator', 'EVALUATORS', 'Report',
    'VocEvaluator', 'coco_results', 'evaluate', 'evaluate_checkpoint', 'headline',
    'make_eval_step', 'make_evaluator', 'publish', 'restore_state', 'voc_ap', 'voc_box_iou',
]
