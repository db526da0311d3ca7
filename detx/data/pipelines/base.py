"""What every input pipeline is: the :class:`Pipeline` base class.

A pipeline is built from a config and owns how a detector family's batches are
made: the per-example train and eval functions (picklable, run in the grain
workers of detx/data/loader.py), the padding element, and the eval transform of
user images (predict, the benchmark). Subclasses implement ``train_example``,
``eval_example``, ``padding_example``, ``eval_batch`` and ``train_shapes``; the
iterators are shared.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from detx.data import loader
from detx.data.transforms import augment_level, check_image_dtype


class TrainExamples(abc.ABC):
  """Base of a pipeline's train example function (global example position ->
  one element): the dataset, the seed, the global batch size, the augment
  level and whether to shuffle. Picklable: it runs in the grain workers."""

  def __init__(self, dataset, *, seed: int, batch_size: int, augment,
               shuffle: bool):
    self.dataset = dataset
    self.seed = int(seed)
    self.batch_size = int(batch_size)
    self.augment = augment_level(augment)
    self.shuffle = bool(shuffle)

  @abc.abstractmethod
  def __call__(self, position: int) -> dict[str, Any]:
    ...


class Pipeline(abc.ABC):
  """Batches of one input pipeline, from config.seed, config.data.*,
  train.batch_size and eval.batch_size (read once, at construction)."""

  name = ''
  draws_sizes = False  # a train size per step (data.train_sizes), or per data.size_group

  def __init__(self, config):
    data = config.data
    self.seed = int(config.seed)
    self.train_batch_size = int(config.train.batch_size)
    self.eval_batch_size = int(config.eval.batch_size)
    self.num_workers = int(data.num_workers)
    self.augment = augment_level(data.augment)
    self.shuffle = bool(data.shuffle)
    self.max_boxes = int(data.max_boxes)
    # 'uint8': batches carry resized RGB, the model normalises (detx.models.inputs);
    # a quarter of the bytes through the worker processes' shared memory.
    self.image_dtype = check_image_dtype(data.get('image_dtype', 'float32'))
    if int(data.get('size_group', 0)) and not self.draws_sizes:
      from detx.errors import ConfigError
      raise ConfigError(f'data.size_group: the {self.name} pipeline draws no train sizes '
                        '(YOLOv3 only); set it to 0')

  # -- what a pipeline defines ------------------------------------------------

  @abc.abstractmethod
  def train_example(self, dataset) -> Callable[[int], dict[str, Any]]:
    """Global example position -> one train batch element (picklable)."""
    ...

  @abc.abstractmethod
  def eval_example(self, dataset, batch_size: int
                   ) -> Callable[[int], dict[str, Any]]:
    """Index in image-id order -> one eval element, valid=False padding
    beyond the last image (picklable)."""
    ...

  @abc.abstractmethod
  def padding_example(self) -> dict[str, np.ndarray]:
    """One all-padding eval element (valid=False) of the pipeline's first
    eval shape: model init and dummy batches."""
    ...

  @abc.abstractmethod
  def eval_batch(self, images: Sequence[np.ndarray],
                 batch_size: int | None = None) -> dict[str, np.ndarray]:
    """The eval transform of user images (uint8 RGB [H, W, 3] each) -> one
    batch with the eval iterator's keys (image_id = the index in `images`),
    padded with valid=False elements up to `batch_size` when given."""
    ...

  @abc.abstractmethod
  def train_shapes(self) -> list[tuple[int, int]]:
    """The (h, w) shapes train batch images can take."""
    ...

  # -- shared -----------------------------------------------------------------

  @property
  def group_size(self) -> int:
    """Images per loader batch: the train batch, or one size group of it
    (YoloPipeline, data.size_group)."""
    return self.train_batch_size

  @property
  def groups_per_step(self) -> int:
    return self.train_batch_size // self.group_size

  def train_iterator(self, dataset, start_step: int = 0
                     ) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of (this process's rows of) the global train batches
    from `start_step` on; a pure function of (seed, step). With size groups,
    each step's batch comes as `groups_per_step` consecutive group batches."""
    if dataset.num_images == 0:
      raise ValueError(f'{dataset} has no images')
    return loader.train_batches(self.train_example(dataset), self.group_size,
                                start_step * self.groups_per_step, self.num_workers)

  def eval_iterator(self, dataset, batch_size: int | None = None
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Finite iterator over the split in image-id order (batch_size, default
    eval.batch_size); the last batch is padded with valid=False elements."""
    batch_size = int(batch_size or self.eval_batch_size)
    return loader.eval_batches(self.eval_example(dataset, batch_size),
                               dataset.num_images, batch_size,
                               self.num_workers)

  def _user_examples(self, images: Sequence[np.ndarray]) -> list[dict]:
    """User images as raw examples without annotations."""
    out = []
    for i, image in enumerate(images):
      image = np.asarray(image)
      if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image {i}: expected uint8 [H, W, 3] RGB, got '
                         f'{image.dtype} {image.shape}')
      out.append(dict(image=image, image_id=np.int64(i)))
    return out

  @staticmethod
  def _padded(elements: list[dict], padding: dict,
              batch_size: int | None) -> dict[str, np.ndarray]:
    if batch_size is not None and batch_size < len(elements):
      raise ValueError(f'{len(elements)} images do not fit batch_size={batch_size}')
    elements = elements + [padding] * ((batch_size or 0) - len(elements))
    return loader.stack(elements)

  def __repr__(self):
    return f'{type(self).__name__}()'
