"""Where the loader's time goes with workers on (issue 18, item 1).

For each train pipeline (YOLO, R-CNN, Mask R-CNN on coco_tiny, zoo sizes, batches of 8)
and data.image_dtype, at each data.num_workers: the CPU milliseconds per image spent in
the main process and in the worker processes (after one batch per worker, which
includes its start), and img/s; then what writing a batch's bytes costs in a fresh
shared-memory segment against a reused one. CPU time per image, unlike img/s, can be
read on a machine that other jobs share (to ~20-30%). Findings: docs/loader.md.

  python experiments/loader_profile.py [--workers=0,2] [--dtypes=float32,uint8] \
      [--batches=10] [--pipelines=yolo,rcnn,rcnn+masks] [--data_dir=DIR]
"""
import argparse
import json
import os
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detx.data import loader, pipelines as input_pipelines  # noqa: E402
from experiments.bench_common import load_config  # noqa: E402
from experiments.bench_loader import DEFAULT_DATA, LOADER_PIPELINES  # noqa: E402

_TICK = os.sysconf('SC_CLK_TCK')


def children_cpu_s() -> float:
  """User + system CPU seconds of this process's live children (from /proc)."""
  total, me = 0.0, os.getpid()
  for d in Path('/proc').iterdir():
    try:
      if d.name.isdigit():
        fields = (d / 'stat').read_text().rsplit(')', 1)[1].split()
        if int(fields[1]) == me:
          total += (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
      pass
  return total


def main_cpu_s() -> float:
  t = os.times()
  return t.user + t.system


def profile_row(config, dataset, batches: int) -> dict:
  it = input_pipelines.for_config(config).train_iterator(dataset)
  try:
    for _ in range(max(1, config.data.num_workers)):
      batch = next(it)
    m0, k0, t0 = main_cpu_s(), children_cpu_s(), time.perf_counter()
    for _ in range(batches):
      next(it)
    wall = time.perf_counter() - t0
    m1, k1 = main_cpu_s(), children_cpu_s()
  finally:
    it.close()
  n = batches * len(batch['image'])
  return dict(img_s=round(n / wall, 1), main_cpu_ms_img=round(1e3 * (m1 - m0) / n, 2),
              worker_cpu_ms_img=round(1e3 * (k1 - k0) / n, 2),
              batch_mb=round(sum(v.nbytes for v in batch.values()) / 1e6, 1),
              load=round(os.getloadavg()[0], 1))


def shm_cost_ms(mb: float = 26.0, repeats: int = 5) -> dict:
  """CPU ms to write `mb` MB into a fresh shared-memory segment each time (created,
  written, closed, unlinked) and into one segment reused."""
  src = np.random.default_rng(0).integers(0, 255, int(mb * 1e6), np.uint8)

  def timed(fn):
    c = time.process_time()
    for _ in range(repeats):
      fn()
    return round(1e3 * (time.process_time() - c) / repeats, 1)

  def fresh():
    shm = shared_memory.SharedMemory(create=True, size=src.nbytes)
    np.ndarray(src.shape, np.uint8, shm.buf)[...] = src
    shm.close()
    shm.unlink()

  kept = shared_memory.SharedMemory(create=True, size=src.nbytes)
  try:
    view = np.ndarray(src.shape, np.uint8, kept.buf)
    view[...] = 0
    out = dict(mb=mb, fresh_ms=timed(fresh), reused_ms=timed(lambda: view.__setitem__(..., src)))
    del view
  finally:
    kept.close()
    kept.unlink()
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workers', default='0,2')
  p.add_argument('--dtypes', default='float32,uint8')
  p.add_argument('--batches', type=int, default=10)
  p.add_argument('--pipelines', default='yolo,rcnn,rcnn+masks')
  p.add_argument('--data_dir', default=str(DEFAULT_DATA['coco']))
  args = p.parse_args(argv)
  for label, name, overrides in LOADER_PIPELINES:
    if label not in args.pipelines.split(','):
      continue
    config = load_config(name, overrides)
    config.data.dir, config.train.batch_size = args.data_dir, 8
    dataset = loader.build(config, config.data.train_split)
    for dtype in args.dtypes.split(','):
      for workers in (int(w) for w in args.workers.split(',')):
        config.data.image_dtype, config.data.num_workers = dtype, workers
        row = profile_row(config, dataset, args.batches)
        print(json.dumps(dict(pipeline=label, image_dtype=dtype, num_workers=workers, **row)),
              flush=True)
  print(json.dumps(dict(shared_memory=shm_cost_ms())), flush=True)


if __name__ == '__main__':
  main()
