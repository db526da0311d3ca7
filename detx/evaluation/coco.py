"""COCO detection metrics (pycocotools' ``COCOeval``).

``CocoEvaluator`` accumulates host-side numpy detections batch by batch (``add``) and
scores them at the end (``evaluate``), returning a flat ``{name: float}`` dict whose keys
are the metric names written to ``metrics.jsonl`` (``bbox/AP``, ``segm/AP50``, ...).
Detections become COCO results through ``detx.evaluation.results`` (Paddle's
``bbox2out``: legacy +1 boxes, ``w = x2 - x1 + 1``; masks as RLE).

``backend`` (config ``eval.backend``): ``'pycocotools'`` (default) or
``'faster_coco_eval'`` (the optional package ``faster-coco-eval``, ``pip install
'detx[fast-eval]'``; the same stats as pycocotools to 1e-4 on coco_tiny and on 5k
generated images, experiments/rehearsal.py; faster at COCO scale).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from detx.errors import ConfigError
from detx.evaluation.report import Report, per_class_key
from detx.evaluation.results import coco_results

__all__ = ['BACKENDS', 'COCO_STAT_NAMES', 'CocoEvaluator', 'load_coco']

BACKENDS = ('pycocotools', 'faster_coco_eval')

# Order of ``COCOeval.stats``.
COCO_STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                   'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


@contextlib.contextmanager
def quiet(verbose: bool = False):
  """Swallows pycocotools' prints unless ``verbose``."""
  if verbose:
    yield
  else:
    with contextlib.redirect_stdout(io.StringIO()):
      yield


def backend_classes(backend: str = 'pycocotools'):
  """(COCO, COCOeval) of an eval backend (BACKENDS); ConfigError when unknown or absent."""
  if backend not in BACKENDS:
    raise ConfigError(f"eval.backend must be one of {', '.join(map(repr, BACKENDS))}, "
                      f'got {backend!r}')
  if backend == 'pycocotools':
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval
  try:
    from faster_coco_eval import COCO, COCOeval_faster
  except ImportError:
    raise ConfigError("eval.backend='faster_coco_eval' needs the faster-coco-eval "
                      "package: pip install 'detx[fast-eval]'") from None
  # Its summary goes through `print` (captured like pycocotools'), not a logger.
  return COCO, functools.partial(COCOeval_faster, print_function=print)


def load_coco(annotation_file, verbose: bool = False, backend: str = 'pycocotools'):
  """The backend's ``COCO`` from a path (loaded once) or an existing object (another
  backend's is rebuilt from its ``dataset`` dict)."""
  coco_class, _ = backend_classes(backend)
  if isinstance(annotation_file, coco_class):
    return annotation_file
  with quiet(verbose):
    if hasattr(annotation_file, 'dataset'):
      coco = coco_class()
      coco.dataset = annotation_file.dataset
      coco.createIndex()
      return coco
    return coco_class(os.fspath(annotation_file))


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
    backend: 'pycocotools' or 'faster_coco_eval' (the module docstring).
  """

  def __init__(self,
               annotation_file,
               category_ids: Sequence[int] | None = None,
               image_ids: Iterable[int] | None = None,
               iou_types: Sequence[str] = ('bbox',),
               verbose: bool = False,
               backend: str = 'pycocotools'):
    if isinstance(iou_types, str):
      iou_types = (iou_types,)
    for t in iou_types:
      if t not in ('bbox', 'segm'):
        raise ValueError(f'unsupported iou type {t!r} (bbox or segm)')
    self.iou_types = tuple(iou_types)
    self.verbose = verbose
    self.backend = backend
    self.coco_gt = load_coco(annotation_file, verbose, backend)
    if category_ids is None:
      category_ids = sorted(self.coco_gt.getCatIds())
    self.category_ids = np.asarray([int(c) for c in category_ids], np.int64)
    self._fixed_image_ids = (None if image_ids is None
                             else sorted({int(i) for i in image_ids}))
    self._gt_image_ids = set(self.coco_gt.getImgIds())
    self.coco_evals: dict[str, Any] = {}
    self.summaries: dict[str, list[str]] = {}
    self.reset()

  def reset(self):
    """Drops every accumulated detection."""
    self._results = {t: [] for t in self.iou_types}
    self._seen_image_ids: set[int] = set()
    self.coco_evals, self.summaries = {}, {}

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

    segm = 'segm' in self._results and masks is not None
    for b in range(batch):
      image_id = int(image_ids[b])
      if image_id not in self._gt_image_ids:
        if valid[b].any():
          raise ValueError(f'image id {image_id} is not in the annotations')
        continue
      self._seen_image_ids.add(image_id)
      for r in coco_results(image_id, boxes[b], scores[b], classes[b], self.category_ids,
                            valid[b], masks[b] if segm else None):
        seg = r.pop('segmentation', None)
        if 'bbox' in self._results:
          self._results['bbox'].append(r)
        if seg is not None:
          self._results['segm'].append({'image_id': r['image_id'],
                                        'category_id': r['category_id'],
                                        'segmentation': seg, 'score': r['score']})

  def evaluate(self) -> dict[str, float]:
    """Runs COCOeval per iou type -> {'bbox/AP': ..., ..., 'segm/ARl': ...}.

    Stats are pycocotools' (an area range without ground truth keeps its -1). An
    iou type without any detection scores 0.0 on every stat.
    """
    _, coco_eval_class = backend_classes(self.backend)
    image_ids = self.image_ids
    metrics = {}
    self.coco_evals, self.summaries = {}, {}
    for iou_type in self.iou_types:
      results = self._results[iou_type]
      if not results or not image_ids:
        stats = [0.0] * len(COCO_STAT_NAMES)
        self.summaries[iou_type] = [f'no {iou_type} detections: every stat is 0']
      else:
        with quiet(self.verbose):
          # loadRes annotates its input dicts in place: hand it copies.
          coco_dt = self.coco_gt.loadRes([dict(r) for r in results])
          coco_eval = coco_eval_class(self.coco_gt, coco_dt, iou_type)
          coco_eval.params.imgIds = image_ids
          coco_eval.evaluate()
          coco_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
          coco_eval.summarize()
        self.summaries[iou_type] = summary.getvalue().splitlines()
        if self.verbose:
          print(summary.getvalue(), end='')
        self.coco_evals[iou_type] = coco_eval
        stats = [float(s) for s in coco_eval.stats[:len(COCO_STAT_NAMES)]]
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

  def write_results(self, directory) -> list[str]:
    """DIRECTORY/<iou type>.json for each iou type (bbox.json, segm.json): COCO results
    with the dataset's category ids, as the COCO test-dev server takes them."""
    return [self.write_json(Path(directory) / f'{t}.json', t) for t in self.iou_types]

  def report(self, class_names: Sequence[str]) -> Report:
    """The report of the last ``evaluate``: pycocotools' summary per iou type; per
    class (``class_names[i]`` names contiguous class i), AP (IoU .50:.95) and AP50 over
    all areas at 100 detections, from ``COCOeval.eval['precision']``; the
    precision-recall curve at IoU 0.5 of each class with ground truth."""
    ap = {}  # (iou type, contiguous class) -> (AP, AP50)
    curves = {}
    for iou_type in self.iou_types:
      curves[f'{iou_type} IoU=0.50'] = panel = {}
      coco_eval = self.coco_evals.get(iou_type)
      if coco_eval is None:  # no detections: 0 where there is ground truth
        with_gt = {a['category_id'] for a in self.coco_gt.loadAnns(self.coco_gt.getAnnIds(
            imgIds=self.image_ids, iscrowd=False))}
        for k, cat in enumerate(self.category_ids):
          ap[iou_type, k] = (0.0, 0.0) if int(cat) in with_gt else (math.nan, math.nan)
        continue
      precision = coco_eval.eval['precision'][:, :, :, 0, -1]  # [IoU, recall, class]
      column = {int(c): i for i, c in enumerate(coco_eval.params.catIds)}
      for k, cat in enumerate(self.category_ids):
        p = precision[:, :, column[int(cat)]] if int(cat) in column else np.full((1, 1), -1.)
        if (p < 0).all():
          ap[iou_type, k] = (math.nan, math.nan)
          continue
        ap[iou_type, k] = (float(p[p > -1].mean()), float(np.clip(p[0], 0, None).mean()))
        panel[class_names[k]] = (np.asarray(coco_eval.params.recThrs), np.clip(p[0], 0, None))
    rows = {name: sum((ap[t, k] for t in self.iou_types), ())
            for k, name in enumerate(class_names)}
    per_class = {per_class_key(f'{t}/AP', name): ap[t, k][0]
                 for t in self.iou_types for k, name in enumerate(class_names)
                 if not math.isnan(ap[t, k][0])}
    summary = [f'{t}: {line.strip()}' for t in self.iou_types for line in self.summaries[t]]
    return Report(summary=summary,
                  columns=tuple(f'{t} {s}' for t in self.iou_types for s in ('AP', 'AP50')),
                  rows=rows, curves=curves, per_class=per_class)
