"""Datasets and grain data loaders.

``build(config, split)`` prepares (once) and opens a split as a
:class:`Dataset`; ``train_iterator`` / ``eval_iterator`` turn it into numpy
batches::

  image     float32 [B, S, S, 3]  NHWC RGB, (x/255 - mean)/std (ImageNet)
  boxes     float32 [B, M, 4]     normalised xyxy in [0, 1]
  classes   int32   [B, M]        contiguous class ids 0..C-1
  scores    float32 [B, M]        gt_score: 1, or the mixup factor
  box_mask  bool    [B, M]        real (non-crowd, non-empty) boxes
  image_id  int64   [B]           COCO image id (-1 for padding)
  orig_size int32   [B, 2]        (h, w) of the original image
  valid     bool    [B]           False for eval padding

with M = ``config.data.max_boxes``. Training is a pure function of
(config.seed, step): the global example position p = step * B + j picks the
record (a per-epoch permutation seeded by (seed, epoch)), the augmentation RNG
is seeded by (seed, p) and the batch's square size by (seed, step), so
``train_iterator(..., start_step=k)`` resumes exactly with no iterator state.

``data.pipeline='rcnn'`` (R-CNN / Mask R-CNN / RetinaNet; Paddle's
FasterRCNN / MaskRCNN feeds, see transforms.rcnn_example) gives instead::

  image     float32 [B, Hb, Wb, 3]  normalised, resized, zero-padded
                                    bottom/right into one bucket per batch
  image_hw  int32   [B, 2]    resized (unpadded) h, w
  scale     float32 [B]       im_scale (resized = original * scale)
  boxes     float32 [B, G, 4] absolute legacy xyxy in resized pixels
  classes   int32   [B, G]    contiguous 0..C-1 (no background offset)
  is_crowd  bool    [B, G]    crowd GTs (only with data.keep_crowd)
  box_mask  bool    [B, G]    real boxes, crowd included
  gt_masks  uint8   [B, G, M, M]  with data.with_masks: each GT's mask in
                              its own box frame (detx/data/masks.py)
  orig_size int32   [B, 2];  image_id int64 [B];  valid bool [B]

with G = data.max_boxes (100), M = data.mask_size (112). Pad shapes are
``bucket_shapes(config)``. Training batches are aspect-grouped: each epoch a
(seed, epoch) permutation is split into landscape (w >= h) and portrait
images, each group is chunked into batches (the last chunk of a group is
filled up from the start of the same group), and the batch order is shuffled
by (seed, epoch); every batch takes the smallest bucket that holds all its
images (from the record sizes, no decoding), so a batch is still a pure
function of (seed, step). Eval batches keep image-id order, each padded to
the smallest bucket holding its images.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Iterator

import grain
import jax
from absl import flags
from absl import logging
import numpy as np

from detx.data import coco
from detx.data import synthetic
from detx.data import transforms

# Stop index of the "infinite" training range (grain datasets are sized).
_INFINITE = 1 << 62
_SIZES_FILE = 'detx_image_sizes.npy'
PIPELINES = ('yolo', 'rcnn')


def _get(cfg, key, default):
  try:
    v = cfg.get(key, default) if hasattr(cfg, 'get') else getattr(cfg, key)
  except AttributeError:
    return default
  return default if v is None else v


class Dataset:
  """A prepared COCO-format split, random access to raw examples.

  ``dataset[i]`` is the i-th image in ascending image-id order, a dict with
  image (uint8 RGB [H, W, 3]), image_id, height, width, file_name, boxes
  (float32 [n, 4] absolute legacy pixel xyxy), labels (int32 contiguous),
  category_ids, is_crowd, area, ann_ids and segmentation (raw json strings).
  ``dataset.report`` is what preparing found and did (converted / dropped
  images and boxes, see coco.REPORT_KEYS); ``dataset.options`` the bad-data
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
    self.options = coco.check_options(bad_boxes=bad_boxes, **self._kwargs)
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
  data = config.data
  name = _get(data, 'name', 'coco')
  data_dir = _get(data, 'dir', '')
  if name == 'synthetic':
    data_dir = synthetic.ensure(data_dir or synthetic.DEFAULT_DIR)
  elif name != 'coco':
    raise ValueError(f"data.name must be 'coco' or 'synthetic', got {name!r}")
  if not data_dir:
    raise ValueError('config.data.dir is not set')
  return str(data_dir)


def data_options(config, split: str) -> dict[str, str]:
  """The bad-data switches for `split` (coco.OPTIONS, validated): data.
  bad_boxes ('error' | 'drop'), data.exif ('ignore' | 'apply'), data.
  bad_images ('error' | 'drop'), data.empty_images ('keep' | 'drop'; applied
  to the train split only: evaluation splits keep every image, so that
  detections on images without ground truth still count)."""
  data = config.data
  options = {k: _get(data, k, v) for k, v in coco.DEFAULTS.items()}
  if split != _get(data, 'train_split', 'train'):
    options['empty_images'] = 'keep'
  return coco.check_options(**options)


def build(config, split: str) -> Dataset:
  """The Dataset of `split`; 'train' honours data.train_limit, others
  eval.limit. Prepares the tfds array_record files on first use, with the
  bad-data switches of :func:`data_options`."""
  data = config.data
  data_dir = source_dir(config)
  if split == _get(data, 'train_split', 'train'):
    limit = _get(data, 'train_limit', 0)
  else:
    limit = _get(config.eval, 'limit', 0) if 'eval' in config else 0
  dataset = Dataset(data_dir, split, limit=limit,
                    cache_dir=_get(data, 'cache_dir', ''),
                    **data_options(config, split))
  summary = coco.summarize(
      {k: v for k, v in dataset.report.items() if k != 'empty_images'})
  if summary:
    logging.info('%s: %s', dataset, summary.replace('\n', '; '))
  return dataset


def _stack(elements):
  return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch, 7]).permutation(n)


class TrainExample:
  """Global example position -> one transformed train example."""

  def __init__(self, dataset: Dataset, *, seed: int, batch_size: int,
               sizes, mixup_epochs: int, augment, shuffle: bool,
               max_boxes: int):
    self.dataset = dataset
    self.seed = int(seed)
    self.batch_size = int(batch_size)
    self.sizes = list(sizes)
    self.mixup_epochs = int(mixup_epochs)
    self.augment = transforms.augment_level(augment)
    self.shuffle = bool(shuffle)
    self.max_boxes = int(max_boxes)

  def record(self, position: int) -> int:
    n = self.dataset.num_images
    epoch, offset = divmod(position, n)
    if not self.shuffle:
      return offset
    return int(_permutation(self.seed, epoch, n)[offset])

  def size(self, step: int) -> int:
    if len(self.sizes) == 1:
      return self.sizes[0]
    rng = np.random.default_rng([self.seed, step, 11])
    return self.sizes[int(rng.integers(len(self.sizes)))]

  def __call__(self, position: int) -> dict[str, Any]:
    position = int(position)
    n = self.dataset.num_images
    step = position // self.batch_size
    index = self.record(position)
    rng = np.random.default_rng([self.seed, position, 13])
    partner = None
    epoch = step * self.batch_size // n
    if self.augment != 'none' and epoch < self.mixup_epochs and n > 1:
      j = int(rng.integers(n - 1))
      partner = self.dataset[j + (j >= index)]
    return transforms.yolo_train(
        self.dataset[index], self.size(step), rng, partner=partner,
        augment=self.augment, max_boxes=self.max_boxes)


class EvalExample:
  """Index in image-id order -> one eval example (padding beyond the end)."""

  def __init__(self, dataset: Dataset, size: int, max_boxes: int):
    self.dataset = dataset
    self.size = int(size)
    self.max_boxes = int(max_boxes)

  def __call__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if index >= self.dataset.num_images:
      return transforms.padding_example(self.size, self.max_boxes)
    return transforms.yolo_eval(self.dataset[index], self.size,
                                self.max_boxes)


def train_sizes(config) -> list[int]:
  return transforms.scale_sizes(list(config.data.train_sizes),
                                _get(config.data, 'max_size', 0))


def eval_size(config) -> int:
  return transforms.scale_sizes([int(config.eval.size)],
                                _get(config.data, 'max_size', 0))[0]


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


def pipeline(config) -> str:
  """config data.pipeline: 'yolo' (default) or 'rcnn'."""
  name = _get(config.data, 'pipeline', 'yolo')
  if name not in PIPELINES:
    raise ValueError(f'data.pipeline must be one of {PIPELINES}, '
                     f'got {name!r}')
  return name


def train_iterator(config, dataset: Dataset, start_step: int = 0
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of global train batches from `start_step` on."""
  if pipeline(config) == 'rcnn':
    return _rcnn_train_iterator(config, dataset, start_step)
  return _yolo_train_iterator(config, dataset, start_step)


def eval_iterator(config, dataset: Dataset, batch_size: int | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Finite iterator over the split in image-id order; the last batch is
  padded with valid=False elements."""
  if pipeline(config) == 'rcnn':
    return _rcnn_eval_iterator(config, dataset, batch_size)
  return _yolo_eval_iterator(config, dataset, batch_size)


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


def _train_batches(fn, batch_size: int, start_step: int, num_workers: int):
  """This process's rows of the global batches from `start_step` on. Example
  positions stay global (step * batch_size + row), so the data are the same
  whatever the process count."""
  rows, first = process_rows(batch_size)
  ds = (grain.MapDataset.range(int(start_step) * rows, _INFINITE)
        .map(_GlobalPosition(rows, first, batch_size))
        .map(fn)
        .batch(rows, batch_fn=_stack))
  return _iterate(ds, num_workers)


def _yolo_train_iterator(config, dataset: Dataset, start_step: int = 0
                         ) -> Iterator[dict[str, np.ndarray]]:
  data = config.data
  batch_size = int(config.train.batch_size)
  if dataset.num_images == 0:
    raise ValueError(f'{dataset} has no images')
  fn = TrainExample(
      dataset, seed=_get(config, 'seed', 0), batch_size=batch_size,
      sizes=train_sizes(config),
      mixup_epochs=_get(data, 'mixup_epochs', 0),
      augment=_get(data, 'augment', True),
      shuffle=_get(data, 'shuffle', True),
      max_boxes=_get(data, 'max_boxes', 50))
  return _train_batches(fn, batch_size, start_step, int(_get(data, 'num_workers', 0)))


def _yolo_eval_iterator(config, dataset: Dataset,
                        batch_size: int | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  batch_size = int(batch_size or config.eval.batch_size)
  fn = EvalExample(dataset, eval_size(config),
                   _get(config.data, 'max_boxes', 50))
  total = math.ceil(dataset.num_images / batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(fn).batch(batch_size,
                                                   batch_fn=_stack)
  return _iterate(ds, int(_get(config.data, 'num_workers', 0)))


# ----------------------------------------------------------------------------
# R-CNN / RetinaNet pipeline (data.pipeline = 'rcnn').

def _eval_batch_size(config, batch_size=None) -> int:
  if batch_size:
    return int(batch_size)
  return int(_get(config.eval, 'batch_size', 1)) if 'eval' in config else 1


def rcnn_settings(config) -> dict[str, Any]:
  """The R-CNN transform settings of `config` (data.short_side 800,
  data.long_side 1333, data.max_size, data.max_boxes 100, data.with_masks,
  data.mask_size 112, data.keep_crowd) as rcnn_example keyword arguments."""
  data = config.data
  short, long, _ = transforms.rcnn_sizes(
      _get(data, 'short_side', 800), _get(data, 'long_side', 1333),
      int(_get(data, 'max_size', 0)))
  return dict(short_side=short, long_side=long,
              max_boxes=int(_get(data, 'max_boxes', 100)),
              with_masks=bool(_get(data, 'with_masks', False)),
              mask_size=int(_get(data, 'mask_size', 112)),
              keep_crowd=bool(_get(data, 'keep_crowd', False)))


def bucket_shapes(config, mode: str = 'all',
                  eval_batch_size: int | None = None) -> list[tuple[int, int]]:
  """The (h, w) pad shapes R-CNN batches can take, smallest area first.

  data.buckets (list of [h, w]) if set, else landscape (ceil(short),
  ceil(long)) and portrait (ceil(long), ceil(short)), rounded up to
  data.pad_multiple (32; RetinaNet 128); data.max_size scales them. Eval
  with batches of more than one image (eval.batch_size, or
  `eval_batch_size`) adds the square (ceil(long), ceil(long)) bucket for
  batches that mix orientations, unless data.buckets is set. mode: 'train',
  'eval' or 'all' (their union).
  """
  data = config.data
  short, long, factor = transforms.rcnn_sizes(
      _get(data, 'short_side', 800), _get(data, 'long_side', 1333),
      int(_get(data, 'max_size', 0)))
  multiple = int(_get(data, 'pad_multiple', 32))
  explicit = [tuple(int(v) for v in b) for b in _get(data, 'buckets', [])]
  if mode not in ('train', 'eval', 'all'):
    raise ValueError(f"mode must be 'train', 'eval' or 'all', got {mode!r}")
  square = (mode != 'train'
            and _eval_batch_size(config, eval_batch_size) > 1)
  return transforms.rcnn_buckets(short, long, multiple, explicit, factor,
                                 square=square)


def _resized_shapes(dataset: Dataset, settings) -> np.ndarray:
  sizes = dataset.image_sizes
  rh, rw = transforms.rcnn_resized_shape(sizes[:, 0], sizes[:, 1],
                                         settings['short_side'],
                                         settings['long_side'])
  return np.stack([rh, rw], 1).reshape(-1, 2)


class RcnnTrainExample:
  """Global example position -> one aspect-grouped R-CNN train example.

  Position p is element j = p % B of batch step = p // B; step is batch k of
  epoch e = step // K (K batches per epoch, fixed), whose records come from
  the (seed, e) grouping below. The flip RNG is seeded by (seed, p).
  """

  def __init__(self, dataset: Dataset, *, seed: int, batch_size: int,
               augment, shuffle: bool, settings: dict, buckets):
    self.dataset = dataset
    self.seed = int(seed)
    self.batch_size = int(batch_size)
    self.augment = transforms.augment_level(augment)
    self.shuffle = bool(shuffle)
    self.settings = dict(settings)
    self.buckets = [tuple(b) for b in buckets]
    sizes = dataset.image_sizes
    self.resized = _resized_shapes(dataset, self.settings)
    self.landscape = sizes[:, 1] >= sizes[:, 0]
    groups = [int(self.landscape.sum()), int((~self.landscape).sum())]
    self.batches_per_epoch = sum(-(-g // self.batch_size) for g in groups)
    for flag in (True, False):  # fail here, not in a worker
      if (self.landscape == flag).any():
        transforms.pick_bucket(self.resized[self.landscape == flag],
                               self.buckets)
    self._epochs = {}

  def epoch_batches(self, epoch: int) -> np.ndarray:
    """int [K, B] record indices of epoch `epoch`'s batches, in order."""
    if epoch not in self._epochs:
      n, b = self.dataset.num_images, self.batch_size
      if self.shuffle:
        perm = _permutation(self.seed, epoch, n)
      else:
        perm = np.arange(n)
      chunks = []
      for flag in (True, False):
        group = perm[self.landscape[perm] == flag]
        if len(group):
          # np.resize repeats the group: the last chunk is filled up from its
          # start.
          chunks.append(np.resize(group, (-(-len(group) // b), b)))
      batches = np.concatenate(chunks)
      if self.shuffle:
        order = np.random.default_rng([self.seed, epoch, 17]).permutation(
            len(batches))
        batches = batches[order]
      if len(self._epochs) >= 2:
        self._epochs.pop(next(iter(self._epochs)))
      self._epochs[epoch] = batches
    return self._epochs[epoch]

  def batch_records(self, step: int) -> np.ndarray:
    """int [B] record indices of global batch `step`."""
    epoch, k = divmod(int(step), self.batches_per_epoch)
    return self.epoch_batches(epoch)[k]

  def bucket(self, step: int) -> tuple[int, int]:
    return transforms.pick_bucket(self.resized[self.batch_records(step)],
                                  self.buckets)

  def __call__(self, position: int) -> dict[str, Any]:
    position = int(position)
    step, j = divmod(position, self.batch_size)
    records = self.batch_records(step)
    rng = np.random.default_rng([self.seed, position, 13])
    return transforms.rcnn_train(
        self.dataset[int(records[j])], rng, augment=self.augment,
        pad_shape=self.bucket(step), **self.settings)

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_epochs'] = {}
    return state


class RcnnEvalExample:
  """Index in image-id order -> one R-CNN eval example; each batch of
  `batch_size` consecutive indices shares the smallest bucket holding its
  images; indices beyond the end are valid=False padding."""

  def __init__(self, dataset: Dataset, *, batch_size: int, settings: dict,
               buckets):
    self.dataset = dataset
    self.batch_size = int(batch_size)
    self.settings = dict(settings)
    self.buckets = [tuple(b) for b in buckets]
    resized = _resized_shapes(dataset, self.settings)
    n = dataset.num_images
    self.batch_buckets = [
        transforms.pick_bucket(resized[i:i + self.batch_size], self.buckets)
        for i in range(0, n, self.batch_size)]

  def __call__(self, index: int) -> dict[str, Any]:
    index = int(index)
    pad_shape = self.batch_buckets[index // self.batch_size]
    if index >= self.dataset.num_images:
      return transforms.rcnn_padding_example(
          pad_shape, self.settings['max_boxes'], self.settings['with_masks'],
          self.settings['mask_size'])
    return transforms.rcnn_eval(self.dataset[index], pad_shape=pad_shape,
                                **self.settings)


def _rcnn_train_iterator(config, dataset: Dataset, start_step: int = 0
                         ) -> Iterator[dict[str, np.ndarray]]:
  data = config.data
  batch_size = int(config.train.batch_size)
  if dataset.num_images == 0:
    raise ValueError(f'{dataset} has no images')
  fn = RcnnTrainExample(
      dataset, seed=_get(config, 'seed', 0), batch_size=batch_size,
      augment=_get(data, 'augment', 'full'),
      shuffle=_get(data, 'shuffle', True), settings=rcnn_settings(config),
      buckets=bucket_shapes(config, 'train'))
  return _train_batches(fn, batch_size, start_step, int(_get(data, 'num_workers', 0)))


def _rcnn_eval_iterator(config, dataset: Dataset,
                        batch_size: int | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  batch_size = _eval_batch_size(config, batch_size)
  fn = RcnnEvalExample(
      dataset, batch_size=batch_size, settings=rcnn_settings(config),
      buckets=bucket_shapes(config, 'eval', eval_batch_size=batch_size))
  total = math.ceil(dataset.num_images / batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(fn).batch(batch_size,
                                                   batch_fn=_stack)
  return _iterate(ds, int(_get(config.data, 'num_workers', 0)))
