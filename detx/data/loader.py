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
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Iterator

import grain
from absl import flags
import numpy as np

from detx.data import coco
from detx.data import synthetic
from detx.data import transforms

# Stop index of the "infinite" training range (grain datasets are sized).
_INFINITE = 1 << 62


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
  """

  def __init__(self, data_dir, split: str, limit: int = 0, cache_dir: str = '',
               bad_boxes: str = 'error'):
    self.dir = str(Path(data_dir).expanduser().resolve())
    self.split = split
    self._args = (self.dir, split, cache_dir, bad_boxes)
    builder = coco.prepare(*self._args)
    md = builder.info.metadata
    ids = list(md['image_ids'])
    if limit:
      ids = ids[:int(limit)]
    self.image_ids = np.asarray(ids, np.int64)
    self.num_images = len(ids)
    self.category_ids = [int(c) for c in md['category_ids']]
    self.category_names = [str(n) for n in md['category_names']]
    self.annotation_file = str(md['annotation_file'])
    self.cache_path = str(builder.data_path)
    self._source = coco.data_source(builder)

  @property
  def num_classes(self) -> int:
    return len(self.category_ids)

  def __len__(self) -> int:
    return self.num_images

  def _src(self):
    if self._source is None:  # after unpickling (a grain worker process)
      self._source = coco.data_source(coco.make_builder(*self._args))
    return self._source

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    if not 0 <= i < self.num_images:
      raise IndexError(f'index {i} out of range for {self.num_images} images')
    return coco.to_example(self._src()[i])

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None
    return state

  def __repr__(self):
    return (f'Dataset({self.dir!r}, split={self.split!r}, '
            f'num_images={self.num_images})')


def build(config, split: str) -> Dataset:
  """The Dataset of `split`; 'train' honours data.train_limit, others
  eval.limit. Prepares the tfds array_record files on first use."""
  data = config.data
  name = _get(data, 'name', 'coco')
  data_dir = _get(data, 'dir', '')
  if name == 'synthetic':
    data_dir = synthetic.ensure(data_dir or synthetic.DEFAULT_DIR)
  elif name != 'coco':
    raise ValueError(f"data.name must be 'coco' or 'synthetic', got {name!r}")
  if not data_dir:
    raise ValueError('config.data.dir is not set')
  if split == _get(data, 'train_split', 'train'):
    limit = _get(data, 'train_limit', 0)
  else:
    limit = _get(config.eval, 'limit', 0) if 'eval' in config else 0
  return Dataset(data_dir, split, limit=limit,
                 cache_dir=_get(data, 'cache_dir', ''),
                 bad_boxes=_get(data, 'bad_boxes', 'error'))


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


def train_iterator(config, dataset: Dataset, start_step: int = 0
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of global train batches from `start_step` on."""
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
  ds = (grain.MapDataset.range(int(start_step) * batch_size, _INFINITE)
        .map(fn)
        .batch(batch_size, batch_fn=_stack))
  return _iterate(ds, int(_get(data, 'num_workers', 0)))


def eval_iterator(config, dataset: Dataset, batch_size: int | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Finite iterator over the split in image-id order; the last batch is
  padded with valid=False elements."""
  batch_size = int(batch_size or config.eval.batch_size)
  fn = EvalExample(dataset, eval_size(config),
                   _get(config.data, 'max_boxes', 50))
  total = math.ceil(dataset.num_images / batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(fn).batch(batch_size,
                                                   batch_fn=_stack)
  return _iterate(ds, int(_get(config.data, 'num_workers', 0)))
