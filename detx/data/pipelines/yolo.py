"""The YOLOv3 input pipeline (Paddle's YoloTrainFeed / YoloEvalFeed; the
per-example transforms are detx/data/transforms/yolo.py). Batches::

  image     float32 [B, S, S, 3]  NHWC RGB, (x/255 - mean)/std (ImageNet)
  boxes     float32 [B, M, 4]     normalised xyxy in [0, 1]
  classes   int32   [B, M]        contiguous class ids 0..C-1
  scores    float32 [B, M]        gt_score: 1, or the mixup factor
  box_mask  bool    [B, M]        real (non-crowd, non-empty) boxes
  image_id  int64   [B]           COCO image id (-1 for padding)
  orig_size int32   [B, 2]        (h, w) of the original image
  valid     bool    [B]           False for eval padding

with M = ``config.data.max_boxes``. The global example position p = step * B
+ j picks the record (a per-epoch permutation seeded by (seed, epoch)), the
augmentation RNG is seeded by (seed, p) and the batch's square size S (one of
data.train_sizes, scaled by data.max_size) by (seed, step). With full
augmentation each image is resized to the largest train size (Paddle's 608)
with a random interpolation, then nearest-neighbour to S (RandomShape).
Paddle drew S per device batch of 8; one jitted program needs one shape on
every device, so S is drawn once per global batch, or, with data.size_group
G, once per G consecutive rows (group g of step t is loader batch
t * B / G + g, its size drawn from (seed, that index)); the train step then
runs the groups as accumulated micro-steps, one program per size
(detx.train.make_train_step, groups). Mixup pairs each
image with a random other one during the first data.mixup_epochs epochs. Eval
resizes to the square eval.size (aspect not kept).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detx.data import loader
from detx.data.pipelines.base import Pipeline, TrainExamples
from detx.data.transforms import yolo as T


class TrainExample(TrainExamples):
  """Global example position -> one transformed train example."""

  def __init__(self, dataset: loader.Dataset, *, sizes, mixup_epochs: int,
               max_boxes: int, image_dtype: str = 'float32', **kwargs):
    super().__init__(dataset, **kwargs)
    self.image_dtype = image_dtype
    self.sizes = list(sizes)
    self.mixup_epochs = int(mixup_epochs)
    self.max_boxes = int(max_boxes)

  def record(self, position: int) -> int:
    n = self.dataset.num_images
    epoch, offset = divmod(position, n)
    if not self.shuffle:
      return offset
    return int(loader.permutation(self.seed, epoch, n)[offset])

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
    return T.train_example(
        self.dataset[index], self.size(step), rng, partner=partner,
        augment=self.augment, max_boxes=self.max_boxes,
        target_size=max(self.sizes), image_dtype=self.image_dtype)


class EvalExample:
  """Index in image-id order -> one eval example (padding beyond the end)."""

  def __init__(self, dataset: loader.Dataset, size: int, max_boxes: int,
               image_dtype: str = 'float32'):
    self.dataset = dataset
    self.size = int(size)
    self.max_boxes = int(max_boxes)
    self.image_dtype = image_dtype

  def __call__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if index >= self.dataset.num_images:
      return T.padding_example(self.size, self.max_boxes, self.image_dtype)
    return T.eval_example(self.dataset[index], self.size, self.max_boxes,
                          self.image_dtype)


def check_size_group(config) -> int:
  """data.size_group as used (0: one size per batch, also when it is the batch size or
  more), refused (ConfigError) unless a divisor of train.batch_size that divides over
  the devices, with train.grad_accum 1."""
  from detx.errors import ConfigError
  g, batch = int(config.data.get('size_group', 0)), int(config.train.batch_size)
  if g == 0 or g >= batch:  # a batch of G or fewer images draws one size
    return 0
  if g < 0 or batch % g:
    raise ConfigError(f'data.size_group={g} must divide train.batch_size={batch} (0: one '
                      'size per batch)')
  if int(config.train.grad_accum) > 1:
    raise ConfigError(f'data.size_group={g} and train.grad_accum='
                      f'{config.train.grad_accum}: use one of them')
  import jax  # pylint: disable=import-outside-toplevel
  if g % jax.device_count():
    raise ConfigError(f'data.size_group={g} does not divide over the {jax.device_count()} '
                      'devices: each group is one micro-step on all of them')
  return g


class YoloPipeline(Pipeline):
  """data.train_sizes, data.max_size, data.mixup_epochs and eval.size, with
  the shared keys of :class:`Pipeline`."""

  name = 'yolo'
  draws_sizes = True

  def __init__(self, config):
    super().__init__(config)
    data = config.data
    self.train_sizes = T.scale_sizes(list(data.train_sizes), data.max_size)
    self.eval_size = T.scale_sizes([int(config.eval.size)], data.max_size)[0]
    self.mixup_epochs = int(data.mixup_epochs)
    self.size_group = check_size_group(config)

  @property
  def group_size(self) -> int:
    return self.size_group or self.train_batch_size

  def train_example(self, dataset) -> TrainExample:
    return TrainExample(
        dataset, seed=self.seed, batch_size=self.group_size,
        sizes=self.train_sizes, mixup_epochs=self.mixup_epochs,
        augment=self.augment, shuffle=self.shuffle, max_boxes=self.max_boxes,
        image_dtype=self.image_dtype)

  def eval_example(self, dataset, batch_size: int) -> EvalExample:
    del batch_size  # every eval element has the one square shape
    return EvalExample(dataset, self.eval_size, self.max_boxes, self.image_dtype)

  def padding_example(self) -> dict[str, np.ndarray]:
    return T.padding_example(self.eval_size, self.max_boxes, self.image_dtype)

  def eval_batch(self, images: Sequence[np.ndarray],
                 batch_size: int | None = None) -> dict[str, np.ndarray]:
    elements = [T.eval_example(ex, self.eval_size, self.max_boxes, self.image_dtype)
                for ex in self._user_examples(images)]
    return self._padded(elements, self.padding_example(), batch_size)

  def train_shapes(self) -> list[tuple[int, int]]:
    return [(s, s) for s in self.train_sizes]
