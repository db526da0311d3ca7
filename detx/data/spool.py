"""Preparing a split in constant memory, and clearing what a killed preparation left.

tfds' writer passes every serialized example through ``shuffle.Shuffler``, which keeps
them in memory up to 1 GB and then spills to 1000 bucket files chosen by the key's
position in [0, 2**128). With shuffling disabled (detx keeps records in image-id
order) the key is the image id itself, so every spilled example lands in bucket 0,
and that bucket is read back whole and sorted in memory: preparing holds the whole
split's encoded images (COCO train2017: ~19 GB), and below 1 GB the peak grows with
the split (measured by experiments/rehearsal.py).

:func:`ordered_writes` swaps in :class:`OrderedSpool` while detx prepares: examples
are appended to one file in the preparation's temporary directory and only
(key, offset, length) stays in memory; reading back seeks them in key order.

:func:`remove_incomplete` deletes the temporary directories of preparations that
died before tfds renamed them into place (SIGKILL, power loss): they are never read,
but each holds up to the split's size on disk.
"""
from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path

from tensorflow_datasets.core import constants
from tensorflow_datasets.core import shuffle


class OrderedSpool:
  """``shuffle.Shuffler``'s interface for disable_shuffling=True, in constant memory."""

  def __init__(self, dirpath, hash_salt=None, disable_shuffling: bool = True,
               ignore_duplicates: bool = False):
    del hash_salt, disable_shuffling  # keys are kept, never hashed
    self._path = Path(dirpath) / f'detx_spool_{uuid.uuid4().hex}.tmp'
    self._file = None
    self._ignore_duplicates = ignore_duplicates
    self._keys, self._offsets, self._lengths = [], [], []
    self._seen = set()
    self._total_bytes = 0
    self._read_only = False

  @property
  def size(self) -> int:
    return self._total_bytes

  @property
  def num_examples(self) -> int:
    return len(self._keys)

  @property
  def bucket_lengths(self) -> list[int]:
    return [len(self._keys)]

  def add(self, key, data: bytes) -> None:
    if self._read_only:
      raise AssertionError('add() cannot be called after __iter__.')
    if not isinstance(data, bytes):
      raise AssertionError(f'only bytes can be spooled, got {type(data)}')
    if self._ignore_duplicates:
      if key in self._seen:
        return
      self._seen.add(key)
    if self._file is None:
      self._path.parent.mkdir(parents=True, exist_ok=True)
      self._file = open(self._path, 'wb')  # pylint: disable=consider-using-with
    self._keys.append(key)
    self._offsets.append(self._file.tell())
    self._lengths.append(len(data))
    self._file.write(data)
    self._total_bytes += len(data)

  def __iter__(self):
    self._read_only = True
    if self._file is None:
      return
    self._file.close()
    order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
    previous = None
    try:
      with open(self._path, 'rb') as f:
        for i in order:
          f.seek(self._offsets[i])
          data = f.read(self._lengths[i])
          if previous is not None and self._keys[previous[0]] == self._keys[i]:
            raise shuffle.DuplicatedKeysError(data, previous[1])
          previous = (i, data)
          yield self._keys[i], data
    finally:
      self._path.unlink(missing_ok=True)


def _shuffler(original):
  def make(dirpath, hash_salt, disable_shuffling: bool = False,
           ignore_duplicates: bool = False):
    if disable_shuffling:
      return OrderedSpool(dirpath, hash_salt, disable_shuffling, ignore_duplicates)
    return original(dirpath, hash_salt, disable_shuffling=disable_shuffling,
                    ignore_duplicates=ignore_duplicates)
  return make


@contextlib.contextmanager
def ordered_writes():
  """tfds writers created inside write unshuffled splits through OrderedSpool."""
  original = shuffle.Shuffler
  shuffle.Shuffler = _shuffler(original)
  try:
    yield
  finally:
    shuffle.Shuffler = original


def remove_incomplete(data_dir) -> list[Path]:
  """Deletes tfds' temporary directories of `data_dir` (incomplete.XXXXXX_<name>
  beside it); call it holding the preparation lock. Returns what it removed."""
  data_dir = Path(data_dir)
  stale = sorted(data_dir.parent.glob(f'{constants.INCOMPLETE_PREFIX}*_{data_dir.name}'))
  for path in stale:
    shutil.rmtree(path, ignore_errors=True)
  return stale
