"""What experiments/benchmark.py and its bench_* modules share: the benchmark's config
(random weights, a tiny lr), overrides parsed from the command line, the process's peak
RSS and thread count."""
import ast
import os
import resource

from detx import config as cfg
from detx.data import pipelines as input_pipelines

# Train steps run at this lr (unless --override sets optim.base_lr): random-weight
# R-CNNs diverge in a step or two at the zoo's lr, and a step's cost does not
# depend on the lr.
BENCH_LR = 1e-6


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_threads() -> int:
  """CPUs this process may run on: the size of XLA's CPU thread pool."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def parse_overrides(items) -> dict:
  """['model.backbone.width=0.125', ...] -> {'model.backbone.width': 0.125}; values are Python
  literals where they parse, strings otherwise."""
  out = {}
  for item in items or ():
    if '=' not in item:
      raise ValueError(f'--override {item!r}: expected KEY=VALUE')
    key, value = item.split('=', 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    out[key.strip()] = value
  return out


def load_config(name: str, overrides: dict):
  config = cfg.load(name)
  config.model.pretrained = ''  # random weights: a step's cost does not depend on them
  config.optim.base_lr = BENCH_LR
  config.optim.schedule.lr_values = ()
  return cfg.override(config, overrides)


def is_rcnn(config) -> bool:
  return isinstance(input_pipelines.for_config(config), input_pipelines.RcnnPipeline)
