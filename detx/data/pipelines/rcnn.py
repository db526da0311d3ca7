"""The R-CNN input pipeline: Faster / Mask / Cascade R-CNN and RetinaNet
(Paddle's FasterRCNN / MaskRCNN feeds; the per-example transforms are
detx/data/transforms/rcnn.py). Batches::

  image     float32 [B, Hb, Wb, 3]  normalised, resized, zero-padded
                                    bottom/right into one bucket per batch
  image_hw  int32   [B, 2]    resized (unpadded) h, w
  scale     float32 [B]       im_scale (resized = original * scale)
  boxes     float32 [B, G, 4] absolute legacy xyxy in resized pixels
  classes   int32   [B, G]    contiguous 0..C-1 (no background offset)
  is_crowd  bool    [B, G]    crowd GTs (only with data.keep_crowd)
  box_mask  bool    [B, G]    real boxes, crowd included
  gt_polys  float32 [B, G, V, 2]  mask models only: each GT's polygon
                              vertices, original pixels (flipped with the
                              image), polygons one after another
  gt_poly_ids int32 [B, G, V]  the vertex's polygon in its GT, -1 padding
  orig_size int32   [B, 2];  image_id int64 [B];  valid bool [B]

with G = data.max_boxes, V = model.mask.max_points. Pad shapes are
``RcnnPipeline.buckets``. Training batches are aspect-grouped: each epoch a
(seed, epoch) permutation is split into landscape (w >= h) and portrait
images, each group is chunked into batches (the last chunk of a group is
filled up from the start of the same group), and the batch order is shuffled
by (seed, epoch); every batch takes the smallest bucket that holds all its
images (from the record sizes, no decoding), so a batch is still a pure
function of (seed, step). The flip RNG is seeded by (seed, position). Eval
batches keep image-id order, each padded to the smallest bucket holding its
images.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detx.data import loader
from detx.data.pipelines.base import Pipeline, TrainExamples
from detx.data.transforms import rcnn as T


def _resized_shapes(sizes: np.ndarray, settings) -> np.ndarray:
  """int [n, 2] resized (h, w) of images of (h, w) `sizes`."""
  sizes = np.asarray(sizes).reshape(-1, 2)
  rh, rw = T.resized_shape(sizes[:, 0], sizes[:, 1], settings['short_side'],
                           settings['long_side'])
  return np.stack([rh, rw], 1).reshape(-1, 2)


class RcnnTrainExample(TrainExamples):
  """Global example position -> one aspect-grouped R-CNN train example.

  Position p is element j = p % B of batch step = p // B; step is batch k of
  epoch e = step // K (K batches per epoch, fixed), whose records come from
  the (seed, e) grouping below. The flip RNG is seeded by (seed, p).
  """

  def __init__(self, dataset: loader.Dataset, *, settings: dict, buckets,
               **kwargs):
    super().__init__(dataset, **kwargs)
    self.settings = dict(settings)
    self.buckets = [tuple(b) for b in buckets]
    sizes = dataset.image_sizes
    self.resized = _resized_shapes(sizes, self.settings)
    self.landscape = sizes[:, 1] >= sizes[:, 0]
    groups = [int(self.landscape.sum()), int((~self.landscape).sum())]
    self.batches_per_epoch = sum(-(-g // self.batch_size) for g in groups)
    for flag in (True, False):  # fail here, not in a worker
      if (self.landscape == flag).any():
        T.pick_bucket(self.resized[self.landscape == flag], self.buckets)
    self._epochs = {}

  def epoch_batches(self, epoch: int) -> np.ndarray:
    """int [K, B] record indices of epoch `epoch`'s batches, in order."""
    if epoch not in self._epochs:
      n, b = self.dataset.num_images, self.batch_size
      if self.shuffle:
        perm = loader.permutation(self.seed, epoch, n)
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
    return T.pick_bucket(self.resized[self.batch_records(step)], self.buckets)

  def __call__(self, position: int) -> dict[str, Any]:
    position = int(position)
    step, j = divmod(position, self.batch_size)
    records = self.batch_records(step)
    rng = np.random.default_rng([self.seed, position, 13])
    return T.train_example(
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

  def __init__(self, dataset: loader.Dataset, *, batch_size: int,
               settings: dict, buckets):
    self.dataset = dataset
    self.batch_size = int(batch_size)
    self.settings = dict(settings)
    self.buckets = [tuple(b) for b in buckets]
    resized = _resized_shapes(dataset.image_sizes, self.settings)
    n = dataset.num_images
    self.batch_buckets = [
        T.pick_bucket(resized[i:i + self.batch_size], self.buckets)
        for i in range(0, n, self.batch_size)]

  def __call__(self, index: int) -> dict[str, Any]:
    index = int(index)
    pad_shape = self.batch_buckets[index // self.batch_size]
    if index >= self.dataset.num_images:
      return T.padding_example(
          pad_shape, self.settings['max_boxes'], self.settings['with_masks'],
          self.settings['mask_points'], self.settings['image_dtype'])
    return T.eval_example(self.dataset[index], pad_shape=pad_shape,
                          **self.settings)


class RcnnPipeline(Pipeline):
  """data.short_side / long_side (capped by data.max_size), data.pad_multiple,
  data.buckets, data.keep_crowd, and GT polygons when the model family has
  masks (at most model.mask.max_points vertices in model.mask.max_polygons
  polygons per instance) (detx.models.base.family(config).has_masks), with the
  shared keys of :class:`Pipeline`."""

  name = 'rcnn'

  def __init__(self, config):
    super().__init__(config)
    from detx.models.base import family
    data = config.data
    self.short_side, self.long_side, self.factor = T.capped_sizes(
        data.short_side, data.long_side, int(data.max_size))
    self.pad_multiple = int(data.pad_multiple)
    self.explicit_buckets = [tuple(int(v) for v in b) for b in data.buckets]
    self.with_masks = family(config).has_masks
    mask = config.model.get('mask') or {}
    self.mask_points = int(mask.get('max_points', 1024))
    self.mask_polygons = int(mask.get('max_polygons', 64))
    self.keep_crowd = bool(data.keep_crowd)

  @property
  def settings(self) -> dict[str, Any]:
    """The transform settings (transforms.rcnn.transform keyword arguments)."""
    return dict(short_side=self.short_side, long_side=self.long_side,
                max_boxes=self.max_boxes, with_masks=self.with_masks,
                mask_points=self.mask_points,
                mask_polygons=self.mask_polygons, keep_crowd=self.keep_crowd,
                image_dtype=self.image_dtype)

  def buckets(self, mode: str = 'all', eval_batch_size: int | None = None
              ) -> list[tuple[int, int]]:
    """The (h, w) pad shapes batches can take, smallest area first.

    data.buckets (list of [h, w]) if set, else landscape (ceil(short),
    ceil(long)) and portrait (ceil(long), ceil(short)), rounded up to
    data.pad_multiple (32; RetinaNet 128); data.max_size scales them. Eval
    with batches of more than one image (eval.batch_size, or
    `eval_batch_size`) adds the square (ceil(long), ceil(long)) bucket for
    batches that mix orientations, unless data.buckets is set. mode: 'train',
    'eval' or 'all' (their union).
    """
    if mode not in ('train', 'eval', 'all'):
      raise ValueError(f"mode must be 'train', 'eval' or 'all', got {mode!r}")
    square = mode != 'train' and (eval_batch_size or self.eval_batch_size) > 1
    return T.make_buckets(self.short_side, self.long_side, self.pad_multiple,
                          self.explicit_buckets, self.factor, square=square)

  def train_example(self, dataset) -> RcnnTrainExample:
    return RcnnTrainExample(
        dataset, seed=self.seed, batch_size=self.train_batch_size,
        augment=self.augment, shuffle=self.shuffle, settings=self.settings,
        buckets=self.buckets('train'))

  def eval_example(self, dataset, batch_size: int) -> RcnnEvalExample:
    return RcnnEvalExample(
        dataset, batch_size=batch_size, settings=self.settings,
        buckets=self.buckets('eval', eval_batch_size=batch_size))

  def padding_example(self, pad_shape: Sequence[int] | None = None
                      ) -> dict[str, np.ndarray]:
    """Padding of `pad_shape` (default: the first eval bucket)."""
    if pad_shape is None:
      pad_shape = self.buckets('eval')[0]
    return T.padding_example(pad_shape, self.max_boxes, self.with_masks,
                             self.mask_points, self.image_dtype)

  def eval_batch(self, images: Sequence[np.ndarray],
                 batch_size: int | None = None) -> dict[str, np.ndarray]:
    examples = self._user_examples(images)
    n = max(len(examples), batch_size or 0)
    sizes = [ex['image'].shape[:2] for ex in examples]
    pad_shape = T.pick_bucket(_resized_shapes(sizes, self.settings),
                              self.buckets('eval', eval_batch_size=n))
    elements = [T.eval_example(ex, pad_shape=pad_shape, **self.settings)
                for ex in examples]
    return self._padded(elements, self.padding_example(pad_shape), batch_size)

  def train_shapes(self) -> list[tuple[int, int]]:
    return self.buckets('train')
