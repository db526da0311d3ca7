"""The evaluation report: what `--mode=eval` prints and leaves in WORKDIR/eval/<step>/.

Every evaluator (detx.evaluation.EVALUATORS) returns, after ``evaluate()``, a
``Report`` from ``report(class_names)``: its summary lines, a per-class table and the
precision-recall curves behind it, and the per-class metrics that go to metrics.jsonl
(``bbox/AP/<class>``, ``voc/AP/<class>``: every evaluation logs them, the periodic ones
of train_and_eval included). An evaluator that can write its detections for a
submission also has ``write_results(directory) -> [paths]`` (COCO: bbox.json, segm.json).

``publish`` is the eval mode's full report: it prints the summary and the table and
writes report.txt, the results json and pr_curves.png (also to TensorBoard as the
image ``eval/pr_curves``). matplotlib is imported only here and only if installed.
"""
from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np

# metric-name prefixes of the one-line summary train_and_eval prints at each evaluation
HEADLINE = ('bbox/AP', 'segm/AP', 'voc/mAP')


@dataclasses.dataclass
class Report:
  """summary: the metric's own summary lines (pycocotools' 12 per iou type; VOC's mAP).
  columns: the per-class table's column names (e.g. 'bbox AP', 'bbox AP50').
  rows: class name -> one value per column (nan: no ground truth of that class).
  curves: panel title -> class name -> (recall, precision) arrays.
  per_class: metrics.jsonl keys -> values (per_class_key)."""
  summary: list[str]
  columns: tuple[str, ...]
  rows: dict[str, tuple[float, ...]]
  curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
  per_class: dict[str, float]


def per_class_key(metric: str, class_name: str) -> str:
  """'bbox/AP', 'traffic light' -> 'bbox/AP/traffic_light' (a metrics.jsonl / TensorBoard
  name)."""
  return f'{metric}/{"_".join(str(class_name).split())}'


def headline(results: dict) -> dict:
  """The dataset-wide AP metrics of an evaluation (no per-class ones), rounded."""
  return {k: round(float(v), 4) for k, v in results.items()
          if k.startswith(HEADLINE) and k.count('/') == 1}


def plain(results: dict) -> Report:
  """The report of an evaluator without its own: its metrics as summary lines."""
  return Report(summary=[f'{k}: {float(v):.4f}' for k, v in results.items()], columns=(),
                rows={}, curves={}, per_class={})


def table_lines(report: Report) -> list[str]:
  """The per-class table; classes without ground truth in the evaluated images are
  counted, not listed."""
  if not report.columns:
    return []
  shown = {n: v for n, v in report.rows.items() if not all(math.isnan(x) for x in v)}
  width = max([len('class')] + [len(n) for n in shown])
  cols = [max(len(c), 6) for c in report.columns]
  lines = ['  '.join(['class'.ljust(width)] + [c.rjust(w) for c, w in zip(report.columns, cols)])]
  for name, values in shown.items():
    cells = ['-' if math.isnan(v) else f'{v:.4f}' for v in values]
    lines.append('  '.join([name.ljust(width)] + [c.rjust(w) for c, w in zip(cells, cols)]))
  hidden = len(report.rows) - len(shown)
  if hidden:
    lines.append(f'({hidden} classes without ground truth in these images are not listed)')
  return lines


def curves_figure(report: Report, top: int = 8):
  """A matplotlib Figure (no pyplot state): one panel per curve set, a line per class,
  the `top` classes by area in the legend. Raises ImportError without matplotlib."""
  from matplotlib.figure import Figure
  panels = [(t, c) for t, c in report.curves.items() if c]
  fig = Figure(figsize=(5.5 * max(len(panels), 1), 5), dpi=80)
  for i, (title, curves) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    ranked = sorted(curves.items(), key=lambda kv: -float(np.mean(kv[1][1])))
    for j, (name, (recall, precision)) in enumerate(ranked):
      ax.plot(recall, precision, lw=1.5 if j < top else 0.6,
              label=f'{name} {np.mean(precision):.3f}' if j < top else None)
    ax.set(title=title, xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper right',
              title=f'AP50: top {min(top, len(curves))} of {len(curves)} classes')
  fig.tight_layout()
  return fig


def save_curves(report: Report, path, writer=None, step: int = 0) -> bool:
  """Writes the precision-recall image to `path` (and to TensorBoard through `writer`);
  False, with one line, when matplotlib is not installed or there is no curve."""
  if not any(report.curves.values()):
    print('detx: no precision-recall curves (no class with ground truth and detections)')
    return False
  try:
    fig = curves_figure(report)
  except ImportError:
    print('detx: matplotlib is not installed: no precision-recall image '
          '(pip install matplotlib)', flush=True)
    return False
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  fig.savefig(path)
  if writer is not None:
    writer.image(step, 'eval/pr_curves', np.asarray(canvas.buffer_rgba())[..., :3].copy())
  return True


def publish(report: Report, evaluator, directory, writer=None, step: int = 0) -> list[str]:
  """Prints the summary and the per-class table, writes them to DIRECTORY/report.txt
  with the evaluator's results json and pr_curves.png; returns the paths written."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  text = io.StringIO()
  for line in [f'evaluation of step {step}', *report.summary, '', *table_lines(report)]:
    print(line, file=text)
  print(text.getvalue(), end='', flush=True)
  (directory / 'report.txt').write_text(text.getvalue())
  written = [str(directory / 'report.txt')]
  if hasattr(evaluator, 'write_results'):
    written += evaluator.write_results(directory)
  if save_curves(report, directory / 'pr_curves.png', writer, step):
    written.append(str(directory / 'pr_curves.png'))
  print(f'detx: report, detections and curves in {directory}: '
        + ', '.join(Path(p).name for p in written), flush=True)
  return written
