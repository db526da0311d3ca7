"""Run logging: metrics.jsonl (machine-readable), TensorBoard, and the jit compile counter."""
import json
import threading
import time
from pathlib import Path

import jax
import numpy as np

_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
_counts = {'compiles': 0, 'cache_hits': 0}
_lock = threading.Lock()
_installed = False


def _on_duration(event, duration_secs, **kwargs):
  if event == _COMPILE_EVENT:
    with _lock:
      _counts['compiles'] += 1


def _on_event(event, **kwargs):
  if event == _CACHE_HIT_EVENT:
    with _lock:
      _counts['cache_hits'] += 1


def install_compile_counter():
  """Counts XLA compilations (and persistent-cache hits) of this process from now on."""
  global _installed
  if not _installed:
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)
    _installed = True


def compile_counts() -> dict:
  with _lock:
    return {'jit/compiles': _counts['compiles'], 'jit/cache_hits': _counts['cache_hits']}


class MetricWriter:
  """Appends one JSON object per call to metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self.path = Path(workdir) / 'metrics.jsonl'
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(Path(workdir) / 'tensorboard'))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    row = {'step': int(step), 'time': time.time()}
    for k, v in metrics.items():
      v = np.asarray(v)
      row[k] = v.item() if v.size == 1 else v.tolist()
    with self.path.open('a') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in row.items():
      if k not in ('step', 'time') and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, step)
    self._tb.flush()

  def image(self, step: int, tag: str, image_hwc_uint8):
    if self.enabled:
      self._tb.add_image(tag, image_hwc_uint8, step, dataformats='HWC')

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir) -> list[dict]:
  path = Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
