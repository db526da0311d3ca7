"""The SSD input pipeline (Paddle's SSDTrainFeed / SSDEvalFeed; the per-example
transforms are detx/data/transforms/ssd.py). Batches::

  image     float32 [B, S, S, 3]  NHWC BGR, (x - 127.5) / 127.502231
  boxes     float32 [B, M, 4]     normalised xyxy in [0, 1]
  classes   int32   [B, M]        contiguous class ids 0..C-1
  scores    float32 [B, M]        1
  box_mask  bool    [B, M]        real boxes (a crop may leave none)
  image_id  int64   [B]           dataset image id (-1 for padding)
  orig_size int32   [B, 2]        (h, w) of the original image
  valid     bool    [B]           False for eval padding

S = data.image_size (300), capped by data.max_size; M = data.max_boxes. The global
example position p = step * B + j picks the record (a per-epoch permutation seeded by
(seed, epoch)); the augmentation RNG is seeded by (seed, p). Works on any detx dataset
(COCO's example fields; VOC's add `difficult`, which training keeps, as Paddle did).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detx.data import loader
from detx.data.pipelines.base import Pipeline
from detx.data.pipelines.yolo import TrainExample as _Positions
from detx.data.transforms import ssd as T


class TrainExample(_Positions):
  """Global example position -> one SSD train element (YOLO's record order, one size)."""

  def __call__(self, position: int) -> dict[str, Any]:
    position = int(position)
    rng = np.random.default_rng([self.seed, position, 17])
    return T.train_example(self.dataset[self.record(position)], rng, self.sizes[0],
                           self.augment, self.max_boxes)


class EvalExample:
  """Index in image-id order -> one eval element (padding beyond the end)."""

  def __init__(self, dataset: loader.Dataset, size: int, max_boxes: int):
    self.dataset, self.size, self.max_boxes = dataset, int(size), int(max_boxes)

  def __call__(self, index: int) -> dict[str, Any]:
    if int(index) >= self.dataset.num_images:
      return T.padding_example(self.size, self.max_boxes)
    return T.eval_example(self.dataset[int(index)], self.size, self.max_boxes)


class SsdPipeline(Pipeline):
  """data.image_size (capped by data.max_size), with the shared keys of Pipeline."""

  name = 'ssd'

  def __init__(self, config):
    super().__init__(config)
    size = int(config.data.get('image_size', T.SIZE))
    cap = int(config.data.max_size or 0)
    self.size = min(size, cap) if cap else size

  def train_example(self, dataset) -> TrainExample:
    return TrainExample(dataset, seed=self.seed, batch_size=self.train_batch_size,
                        sizes=[self.size], mixup_epochs=0, augment=self.augment,
                        shuffle=self.shuffle, max_boxes=self.max_boxes)

  def eval_example(self, dataset, batch_size: int) -> EvalExample:
    del batch_size  # one square shape
    return EvalExample(dataset, self.size, self.max_boxes)

  def padding_example(self) -> dict[str, np.ndarray]:
    return T.padding_example(self.size, self.max_boxes)

  def eval_batch(self, images: Sequence[np.ndarray],
                 batch_size: int | None = None) -> dict[str, np.ndarray]:
    found = [T.eval_example(x, self.size, self.max_boxes) for x in self._user_examples(images)]
    return self._padded(found, self.padding_example(), batch_size)

  def train_shapes(self) -> list[tuple[int, int]]:
    return [(self.size, self.size)]
