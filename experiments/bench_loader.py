"""Input-pipeline rates for experiments/benchmark.py: --loader (the train pipelines alone,
at several worker counts and image dtypes) and --with_loader=N (the pipeline feeding one
model row, at that row's size and batch, next to the model's rate: which side bounds).
"""
import copy
import time
from pathlib import Path

from detx.data import loader, pipelines as input_pipelines
from experiments.bench_common import is_rcnn, load_config, peak_rss_mb

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
DEFAULT_DATA = {'coco': DATA / 'coco_tiny', 'voc': DATA / 'voc_tiny'}
# --loader: (label, config, overrides) per pipeline.
LOADER_PIPELINES = (
    ('yolo', 'yolov3_darknet', {}),
    ('rcnn', 'faster_rcnn_r50_fpn_1x', {}),
    ('rcnn+masks', 'mask_rcnn_r50_fpn_1x', {}),
)


def bench_loader(data_dir, workers=(0, 2), batches: int = 10, batch_size: int = 8,
                 pipelines=LOADER_PIPELINES, cache_dir: str = '',
                 dtypes=('float32',)) -> list:
  """Images/s of the train input pipelines alone (the first batch of each worker
  excluded: it includes starting the worker), for each data.image_dtype in `dtypes` and each
  data.num_workers in `workers`. A row's `ratio` is its img/s over the in-process
  (0 workers) row of the same pipeline and dtype (None without one); `batch_mb` is
  what one batch weighs, what crosses from a worker to the main process."""
  rows = []
  for label, name, overrides in pipelines:
    config = load_config(name, overrides)
    config.data.dir = str(data_dir)
    if cache_dir:
      config.data.cache_dir = str(cache_dir)
    if batch_size:
      config.train.batch_size = batch_size
    bs = int(config.train.batch_size)
    dataset = loader.build(config, config.data.train_split)  # prepared once, not timed
    for dtype in dtypes:
      config.data.image_dtype = dtype
      base = None
      for nw in workers:
        config.data.num_workers = nw
        row = _loader_row(config, dataset, batches)
        row.update(model=name, mode=f'loader:{label}', batch=bs, num_workers=nw,
                   image_dtype=dtype, peer=None, peer_img_s=None, speedup=None,
                   gflops_per_s=None, peak_fraction=None, compile_s=None,
                   peak_rss_mb=peak_rss_mb())
        base = row['detx_img_s'] if nw == 0 else base
        row['ratio'] = row['detx_img_s'] / base if base else None
        rows.append(row)
        print(f'  loader {label} ({name}) {dtype} workers={nw}: {row["detx_img_s"]:.1f} '
              f'img/s (first batch {row["first_batch_s"]:.1f}s)', flush=True)
  return rows


def _loader_row(config, dataset, batches: int) -> dict:
  """Times `batches` train batches of config's pipeline after one per worker."""
  pipeline = input_pipelines.for_config(config)
  timed = _timed(pipeline.train_iterator(dataset), batches, pipeline.num_workers)
  if is_rcnn(config):
    shape = ' or '.join(f'{h}x{w}' for h, w in pipeline.train_shapes())
  else:
    sizes = [h for h, _ in pipeline.train_shapes()]
    shape = f'{min(sizes)}-{max(sizes)}' if len(sizes) > 1 else str(sizes[0])
  return dict(size=shape, detx_img_s=timed['img_s'], first_batch_s=timed['first_batch_s'],
              batch_mb=timed['batch_mb'])


def loader_markdown(rows) -> str:
  """One line per pipeline and image dtype: img/s at each worker count side by side,
  and each count's ratio to the in-process rate."""
  workers = sorted({r['num_workers'] for r in rows})
  groups = {}
  for r in rows:
    groups.setdefault((r['mode'], r['model'], r.get('image_dtype', 'float32')), []).append(r)
  ratios = [w for w in workers if w and 0 in workers]
  head = ('| pipeline | config | sizes | batch | image | MB/batch | '
          + ' | '.join('in-process img/s' if w == 0 else f'{w} workers img/s' for w in workers)
          + ''.join(f' | {w} workers / in-process' for w in ratios) + ' |')
  lines = [head, '|' + '---|' * (6 + len(workers) + len(ratios))]
  for (mode, model, dtype), group in groups.items():
    by = {r['num_workers']: r for r in group}
    first = group[0]
    cells = [mode.split(':', 1)[1], model, first['size'], str(first['batch']), dtype,
             f"{first['batch_mb']:.1f}"]
    cells += [f"{by[w]['detx_img_s']:.1f}" if w in by else '' for w in workers]
    cells += [f"{by[w]['ratio']:.2f}" if w in by and by[w]['ratio'] else '' for w in ratios]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


class Cycled:
  """index -> fn(index % n): an eval example function read past its split's end, so an
  eval pipeline can be timed for more batches than a small split holds (picklable)."""

  def __init__(self, fn, n: int):
    self.fn, self.n = fn, int(n)

  def __call__(self, index: int):
    return self.fn(int(index) % self.n)


def row_config(config, mode: str, size, batch: int, workers: int, data_dir=None):
  """A copy of a benchmark row's config whose input pipeline makes that row's batches:
  `batch` images at the row's size (YOLO: train_sizes and eval.size = size; SSD:
  data.image_size; R-CNN: data.max_size as the row set it) read by `workers` processes
  from data_dir (default: DEFAULT_DATA of data.name; a VOCdevkit without VOC2012 trains
  on VOC2007 trainval)."""
  config = copy.deepcopy(config)
  data = config.data
  data.dir = str(data_dir or data.dir or DEFAULT_DATA.get(data.name, ''))
  data.num_workers = int(workers)
  config.train.batch_size = config.eval.batch_size = int(batch)
  pipeline = input_pipelines.for_config(config)
  if isinstance(pipeline, input_pipelines.YoloPipeline) and isinstance(size, int):
    data.max_size, data.train_sizes, config.eval.size = 0, (size,), size
  elif isinstance(pipeline, input_pipelines.SsdPipeline) and isinstance(size, int):
    data.max_size, data.image_size = 0, size
  if (data.name == 'voc' and mode == 'train' and data.train_split == 'train'
      and not (Path(data.dir) / 'VOCdevkit' / 'VOC2012').is_dir()):
    data.train_split = 'voc2007_trainval'
  return config


def row_rate(config, mode: str, batches: int) -> dict:
  """img/s of the pipeline feeding a row (config from row_config): its train iterator
  for a train row, its eval transform for an infer row (cycled over the split), over
  `batches` batches after one per worker (which start the workers)."""
  pipeline = input_pipelines.for_config(config)
  split = config.data.train_split if mode == 'train' else config.eval.split
  dataset = loader.build(config, split)  # prepared once, not timed
  bs = int(config.train.batch_size)
  if mode == 'train':
    it = pipeline.train_iterator(dataset)
  else:
    fn = Cycled(pipeline.eval_example(dataset, bs), dataset.num_images)
    it = loader.eval_batches(fn, (batches + max(1, pipeline.num_workers)) * bs, bs,
                             pipeline.num_workers)
  return dict(_timed(it, batches, pipeline.num_workers), num_workers=pipeline.num_workers)


def _timed(it, batches: int, num_workers: int = 0) -> dict:
  """Times `batches` batches of an iterator after one batch per worker (each includes
  that worker's start: they start together but not in step); closes it."""
  try:
    t_start = time.perf_counter()
    batch = next(it)
    first = time.perf_counter() - t_start
    for _ in range(num_workers - 1):
      next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    sec = time.perf_counter() - t0
  finally:
    close = getattr(it, 'close', None)
    if close is not None:
      close()
  return dict(img_s=batches * len(batch['image']) / sec, first_batch_s=first,
              batch_mb=sum(v.nbytes for v in batch.values()) / 1e6)


def bound(model_img_s: float, loader_img_s: float) -> str:
  """Which side limits a row: the slower of the model step and its input pipeline."""
  return 'loader' if loader_img_s < model_img_s else 'model'
