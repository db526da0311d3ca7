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

import grain
import jax
from absl import flags
from absl import logging
import numpy as np

from detx.data import bad_data
from detx.data import coco
from detx.data import synthetic

# Stop index of the "infinite" training range (grain datasets are sized).
_INFINITE = 1 << 62
_SIZES_FILE = 'detx_image_sizes.npy'


class Dataset:
  """A prepared COCO-format split, random access to raw examples.

  ``dataset[i]`` is the i-th image in ascending image-id order, a dict with
  image (uint8 RGB [H, W, 3]), image_id, height, width, file_name, boxes
  (float32 [n, 4] absolute legacy pixel xyxy), labels (int32 contiguous),
  category_ids, is_crowd, area, ann_ids and segmentation (raw json strings).
  ``dataset.report`` is what preparing found and did (converted / dropped
  images and boxes, see bad_data.REPORT_KEYS); ``dataset.options`` the bad-data
  switches it was prepared with.
  """

  def __init__(self, data_dir, split: str, limit: int = 0, cache_dir: str = '',
               bad_boxes: str = 'error', *, exif: str = 'ignore',
               bad_images: str = 'error', empty_images: str = 'keep'):
    self.dir = str(Path(data_dir).expanduser().resolve())
    self.split = split
    self._args = (self.dir, split, cache_dir, bad_boxes)
    self._kwargs = dict(exif=exif, bad_images=bad_images,
                        empty_images=empty_images)
    self.options = bad_data.check_options(bad_boxes=bad_boxes, **self._kwargs)
    builder = coco.prepare(*self._args, **self._kwargs)
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
    if self._source is None:  # after unpickling (a grain worker process)
      self._source = coco.data_source(coco.make_builder(*self._args,
                                                        **self._kwargs))
    return self._source

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    if not 0 <= i < self.num_images:
      raise IndexError(f'index {i} out of range for {self.num_images} images')
    return coco.to_example(self._src()[i])

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
  elif name != 'coco':
    raise ValueError(f"data.name must be 'coco' or 'synthetic', got {name!r}")
  if not data_dir:
    raise ValueError('config.data.dir is not set')
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
                    cache_dir=config.data.cache_dir,
                    **data_options(config, split))
  summary = bad_data.summarize(
      {k: v for k, v in dataset.report.items() if k != 'empty_images'})
  if summary:
    logging.info('%s: %s', dataset, summary.replace('\n', '; '))
  return dataset


def stack(elements: list[dict]) -> dict[str, np.ndarray]:
  """Batch elements (dicts of arrays, the same keys) -> one dict of stacked arrays."""
  return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


@functools.lru_cache(maxsize=4)
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The record order of `epoch` (a pure function of (seed, epoch))."""
  return np.random.default_rng([seed, epoch, 7]).permutation(n)


def _iterate(ds: grain.MapDataset, num_workers: int) -> Iterator:
  """Iterates `ds` (elements are whole batches) in-process or in
  `num_workers` grain worker processes; same elements either way."""
  # Keep the in-process prefetch small: an element is a whole batch.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                            prefetch_buffer_size=2))
  if num_workers <= 0:
    return iter(it)
  # grain's multiprocess prefetch reads absl flags; outside an absl app
  # (tests, notebooks) they are unparsed and reading them raises.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  it = it.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=num_workers, per_worker_buffer_size=1))
  return _owned(iter(it))


def _owned(it) -> Iterator:
  """Copies worker outputs out of shared memory (so callers hold plain numpy
  arrays) and shuts the workers down when the generator is closed."""
  try:
    for batch in it:
      yield {k: np.array(v) for k, v in batch.items()}
  finally:
    close = getattr(it, 'close', None)
    if close is not None:
      close()


def process_rows(batch_size: int) -> tuple[int, int]:
  """(rows, first row) of each global batch that this process loads.

  Every process reads only its slice of a global batch (per-host loading);
  with one process that is the whole batch.
  """
  n, p = jax.process_count(), jax.process_index()
  if batch_size % n:
    raise ValueError(f'train.batch_size={batch_size} does not divide over {n} processes')
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
  rows, first = process_rows(batch_size)
  ds = (grain.MapDataset.range(int(start_step) * rows, _INFINITE)
        .map(_GlobalPosition(rows, first, batch_size))
        .map(fn)
        .batch(rows, batch_fn=stack))
  return _iterate(ds, num_workers)


def eval_batches(fn: Callable[[int], dict[str, Any]], num_images: int,
                 batch_size: int, num_workers: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of `fn(index)` for index 0, 1, ... up to `num_images` rounded up
  to a whole batch (`fn` returns valid=False padding beyond the last image)."""
  total = math.ceil(num_images / batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(fn).batch(batch_size, batch_fn=stack)
  return _iterate(ds, num_workers)
