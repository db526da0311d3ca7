"""Datasets, and the grain machinery every input pipeline iterates with.

``build(config, split)`` prepares (once) and opens a split as a
:class:`Dataset` (random access to raw examples); an input pipeline
(detx/data/pipelines/) turns it into numpy batches with
:func:`train_batches` and :func:`eval_batches`: a per-example function
(position -> one batch element) mapped over a grain range, batched, and read
in-process or in `data.num_workers` worker processes (the same batches
either way).

Training is a pure function of (config.seed, step): the pipeline's example
function sees the global example position p = step * B + j, so
``train_iterator(..., start_step=k)`` resumes exactly with no iterator state,
and each process of a multi-host run loads only its rows of every global
batch (:func:`process_rows`). Eval batches run over the split in image-id
order, the last one padded with valid=False elements.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np

from detx.data import bad_data
from detx.data import coco
from detx.data import synthetic
from detx.data import voc
from detx.errors import ConfigError

# Stop index of the "infinite" training range (grain datasets are sized).
_INFINITE = 1 << 62
_SIZES_FILE = coco.SIZES_FILE  # written by preparation
# data.name -> the builder factory of its layout (make_builder's signature).
BUILDERS = {'coco': coco.make_builder, 'synthetic': coco.make_builder,
            'voc': voc.make_builder}


class Dataset:
  """A prepared COCO-format split, random access to raw examples.

  ``dataset[i]`` is the i-th image in ascending image-id order, a dict with
  image (uint8 RGB [H, W, 3]), image_id, height, width, file_name, boxes
  (float32 [n, 4] absolute legacy pixel xyxy), labels (int32 contiguous),
  category_ids, is_crowd, area, ann_ids and segmentation (raw json strings).
  ``dataset.report`` is what preparing found and did (converted / dropped
  images and boxes, see bad_data.REPORT_KEYS); ``dataset.options`` the bad-data
  switches it was prepared with. `name`: the layout (BUILDERS: 'coco', or 'voc'
  whose examples also carry difficult).
  """

  def __init__(self, data_dir, split: str, limit: int = 0, cache_dir: str = '',
               bad_boxes: str = 'error', *, exif: str = 'ignore',
               bad_images: str = 'error', empty_images: str = 'keep', name: str = 'coco'):
    self.dir = str(Path(data_dir).expanduser().resolve())
    self.split, self.name = split, name
    self._make = BUILDERS[name]
    self._args = (self.dir, split, cache_dir, bad_boxes)
    self._kwargs = dict(exif=exif, bad_images=bad_images,
                        empty_images=empty_images)
    self.options = bad_data.check_options(bad_boxes=bad_boxes, **self._kwargs)
    builder = coco.prepare(*self._args, **self._kwargs, make=self._make)
    md = builder.info.metadata
    ids = list(md['image_ids'])
    if limit:
      ids = ids[:int(limit)]
    self.image_ids = np.asarray(ids, np.int64)
    self.num_images = len(ids)
    self.category_ids = [int(c) for c in md['category_ids']]
    self.category_names = [str(n) for n in md['category_names']]
    self.annotation_file = str(md['annotation_file'])
    self.report = {k: list(v) for k, v in dict(md.get('report', {})).items()}
    self.cache_path = str(builder.data_path)
    self._source = coco.data_source(builder)

  @property
  def num_classes(self) -> int:
    return len(self.category_ids)

  def __len__(self) -> int:
    return self.num_images

  def _src(self):
    if self._source is None:  # after unpickling (a loader worker process)
      self._source = coco.data_source(self._make(*self._args, **self._kwargs))
    return self._source

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    if not 0 <= i < self.num_images:
      raise IndexError(f'index {i} out of range for {self.num_images} images')
    return coco.to_example(self._src()[i])

  def annotations(self, i: int) -> dict[str, Any]:
    """``dataset[i]`` without decoding its image (image None)."""
    return coco.to_example(self._src()[int(i)], decode=False)

  @property
  def image_sizes(self) -> np.ndarray:
    """int32 [num_images, 2]: (height, width) of every image, from the
    records' height/width fields (images are not decoded). Read once per
    prepared split and cached beside the records (detx_image_sizes.npy)."""
    if getattr(self, '_sizes', None) is None:
      self._sizes = self._read_sizes()[:self.num_images]
    return self._sizes

  def _read_sizes(self) -> np.ndarray:
    cache = Path(self.cache_path) / _SIZES_FILE
    src = self._src()
    total = len(src)
    try:
      sizes = np.load(cache)
      if sizes.shape == (total, 2):
        return sizes
    except (OSError, ValueError):
      pass
    sizes = np.zeros((total, 2), np.int32)
    for start in range(0, total, 512):
      idx = list(range(start, min(total, start + 512)))
      for i, rec in zip(idx, src.__getitems__(idx)):
        sizes[i] = int(rec['height']), int(rec['width'])
    try:
      tmp = cache.with_suffix(f'.tmp{os.getpid()}.npy')
      np.save(tmp, sizes)
      os.replace(tmp, cache)
    except OSError:  # read-only cache: recompute next time
      pass
    return sizes

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None
    return state

  def __repr__(self):
    return (f'Dataset({self.dir!r}, split={self.split!r}, '
            f'num_images={self.num_images})')


def source_dir(config) -> str:
  """config.data.dir (for data.name='synthetic' generated on first use)."""
  name, data_dir = config.data.name, config.data.dir
  if name == 'synthetic':
    data_dir = synthetic.ensure(data_dir or synthetic.DEFAULT_DIR)
  elif name not in BUILDERS:
    raise ConfigError(f"data.name must be one of {', '.join(map(repr, BUILDERS))}, "
                      f'got {name!r}')
  if not data_dir:
    raise ConfigError('data.dir is not set: --config.data.dir=DATASET_DIR')
  return str(data_dir)


def data_options(config, split: str) -> dict[str, str]:
  """The bad-data switches for `split` (bad_data.OPTIONS, validated): data.
  bad_boxes ('error' | 'drop'), data.exif ('ignore' | 'apply'), data.
  bad_images ('error' | 'drop'), data.empty_images ('keep' | 'drop'; applied
  to the train split only: evaluation splits keep every image, so that
  detections on images without ground truth still count)."""
  options = {k: config.data[k] for k in bad_data.OPTIONS}
  if split != config.data.train_split:
    options['empty_images'] = 'keep'
  return bad_data.check_options(**options)


def build(config, split: str) -> Dataset:
  """The Dataset of `split`; 'train' honours data.train_limit, others
  eval.limit. Prepares the tfds array_record files on first use, with the
  bad-data switches of :func:`data_options`."""
  data_dir = source_dir(config)
  limit = (config.data.train_limit if split == config.data.train_split
           else config.eval.limit)
  dataset = Dataset(data_dir, split, limit=limit,
                    cache_dir=config.data.cache_dir, name=config.data.name,
                    **data_options(config, split))
  summary = bad_data.summarize(
      {k: v for k, v in dataset.report.items() if k != 'empty_images'})
  if summary:
    logging.info('%s: %s', dataset, summary.replace('\n', '; '))
  return dataset


def check_num_classes(config, dataset: Dataset, evaluating: bool = False) -> str:
  """Refuses (ConfigError) a dataset whose categories do not fit model.num_classes:
  more categories than classes (labels the model has no output for; the quickstart's
  4 classes pointed at COCO), or for evaluation any other count (every class index
  is reported as one of the dataset's categories). Training with fewer categories
  than classes is allowed; returns a note saying so ('' otherwise)."""
  n, classes = dataset.num_classes, int(config.model.num_classes)
  if n > classes or (evaluating and n != classes):
    raise ConfigError(
        f'data.dir {dataset.dir} ({dataset.split}) has {n} categories but '
        f'model.num_classes is {classes}: set --config.model.num_classes={n}, '
        f'or point data.dir at the dataset of this model')
  if n < classes:
    return (f'the dataset has {n} categories, model.num_classes is {classes}: '
            f'outputs {n}..{classes - 1} are never trained')
  return ''


def stack(elements: list[dict]) -> dict[str, np.ndarray]:
  """Batch elements (dicts of arrays, the same keys) -> one dict of stacked arrays."""
  return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


@functools.lru_cache(maxsize=4)
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The record order of `epoch` (a pure function of (seed, epoch))."""
  return np.random.default_rng([seed, epoch, 7]).permutation(n)


def _iterate(ds: grain.MapDataset, job: '_BatchJob', num_workers: int) -> 'Batches':
  """Iterates `ds` (elements are whole batches) in-process, or `job` (the same
  batches) in `num_workers` worker processes (detx.data.workers)."""
  import grain  # pylint: disable=import-outside-toplevel
  if num_workers <= 0:
    # Keep the in-process prefetch small: an element is a whole batch.
    return Batches(iter(ds.to_iter_dataset(grain.ReadOptions(
        num_threads=2, prefetch_buffer_size=2))))
  from detx.data import workers
  return Batches(workers.WorkerPool(job, num_workers, init=_worker_init))


class _BatchJob:
  """Batch b = `fn` over indices b * rows ... (b + 1) * rows - 1 (through `position`
  when given), for b from `first` to `stop` (None: forever); the elements of
  `ds`'s batches, for the worker processes (picklable)."""

  def __init__(self, fn, rows: int, first: int, stop: int | None, position=None):
    self.fn, self.rows, self.position = fn, int(rows), position
    self.first, self.stop = int(first), stop

  def batch(self, b: int) -> list[dict]:
    idx = range(b * self.rows, (b + 1) * self.rows)
    return [self.fn(self.position(i) if self.position else i) for i in idx]


class Batches:
  """An iterator of batches that owns its grain iterator or worker processes.

  ``close()`` (or leaving a ``with`` block) stops the workers and unlinks the shared
  memory they handed batches over in; it runs by itself when the iterator ends or
  raises, and the train and eval loops call it in a ``finally`` (an error, a signal,
  train.max_bad_steps). Without it, an error left the iterator alive in the
  traceback's frames until interpreter exit, where the workers were killed with
  their batches still in shared memory ("resource_tracker: There appear to be N
  leaked shared_memory objects"). Callers hold plain numpy arrays (worker batches
  are copied out of shared memory).
  """

  def __init__(self, it):
    self._it = it

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      raise StopIteration
    try:
      return next(self._it)
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    it, self._it = self._it, None
    if it is not None and hasattr(it, 'close'):
      it.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


def _worker_init(index: int, count: int) -> None:
  """In each worker: SIGINT / SIGTERM are the main process's to handle (Ctrl-C and
  a scheduler's SIGTERM reach the whole process group; the main process checkpoints
  and then stops the workers itself), and a worker whose main process died
  (SIGKILL) exits instead of waiting on its queue forever."""
  del index, count
  import signal
  import threading
  import time
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  parent = os.getppid()

  def exit_with_parent():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=exit_with_parent, daemon=True,
                   name='detx-exit-with-parent').start()


def process_rows(batch_size: int) -> tuple[int, int]:
  """(rows, first row) of each global batch that this process loads.

  Every process reads only its slice of a global batch (per-host loading);
  with one process that is the whole batch.
  """
  import jax  # pylint: disable=import-outside-toplevel
  n, p = jax.process_count(), jax.process_index()
  if batch_size % n:
    raise ConfigError(f'train.batch_size={batch_size} does not divide over {n} processes')
  rows = batch_size // n
  return rows, p * rows


class _GlobalPosition:
  """Local example index -> global example position (picklable for workers)."""

  def __init__(self, rows: int, first: int, batch_size: int):
    self.rows, self.first, self.batch_size = rows, first, batch_size

  def __call__(self, i: int) -> int:
    return (i // self.rows) * self.batch_size + self.first + i % self.rows


def train_batches(fn: Callable[[int], dict[str, Any]], batch_size: int,
                  start_step: int, num_workers: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of the global batches from `start_step` on, forever.
  `fn` maps a global example position (step * batch_size + row) to one
  element, so the data are the same whatever the process count; it must
  pickle (it runs in the worker processes)."""
  import grain  # pylint: disable=import-outside-toplevel
  rows, first = process_rows(batch_size)
  ds = (grain.MapDataset.range(int(start_step) * rows, _INFINITE)
        .map(_GlobalPosition(rows, first, batch_size))
        .map(fn)
        .batch(rows, batch_fn=stack))
  job = _BatchJob(fn, rows, start_step, None, _GlobalPosition(rows, first, batch_size))
  return _iterate(ds, job, num_workers)


def eval_batches(fn: Callable[[int], dict[str, Any]], num_images: int,
                 batch_size: int, num_workers: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of `fn(index)` for index 0, 1, ... up to `num_images` rounded up
  to a whole batch (`fn` returns valid=False padding beyond the last image)."""
  import grain  # pylint: disable=import-outside-toplevel
  total = math.ceil(num_images / batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(fn).batch(batch_size, batch_fn=stack)
  return _iterate(ds, _BatchJob(fn, batch_size, 0, total // batch_size), num_workers)
