"""detx/data/spool.py: tfds' writer without its in-memory shuffle buffer, and the
removal of a killed preparation's temporary directory; preparation writes the image
sizes file that loader.Dataset.image_sizes reads."""
import numpy as np
import pytest
from tensorflow_datasets.core import shuffle

from detx.data import coco, spool


def test_yields_in_key_order_and_keeps_nothing(tmp_path):
  s = spool.OrderedSpool(tmp_path, 'salt')
  items = {5: b'five', 1: b'one', 300: b'x' * 1000, 2: b''}
  for k, v in items.items():
    s.add(k, v)
  assert s.num_examples == 4 and s.size == 1007 and s.bucket_lengths == [4]
  assert list(s) == sorted(items.items())
  assert not list(tmp_path.iterdir())  # the spool file is gone once read
  with pytest.raises(AssertionError, match='after __iter__'):
    s.add(7, b'late')


def test_duplicate_keys(tmp_path):
  s = spool.OrderedSpool(tmp_path, 'salt')
  s.add(3, b'a')
  s.add(3, b'b')
  with pytest.raises(shuffle.DuplicatedKeysError):
    list(s)
  s = spool.OrderedSpool(tmp_path, 'salt', ignore_duplicates=True)
  s.add(3, b'a')
  s.add(3, b'b')
  assert list(s) == [(3, b'a')]


def test_ordered_writes_only_replaces_unshuffled(tmp_path):
  original = shuffle.Shuffler
  with spool.ordered_writes():
    assert isinstance(shuffle.Shuffler(tmp_path, 's', disable_shuffling=True),
                      spool.OrderedSpool)
    assert isinstance(shuffle.Shuffler(tmp_path, 's', disable_shuffling=False), original)
  assert shuffle.Shuffler is original


def test_remove_incomplete(tmp_path):
  data_dir = tmp_path / 'cfg' / '1.1.0'
  stale = tmp_path / 'cfg' / 'incomplete.AB12CD_1.1.0'
  other = tmp_path / 'cfg' / 'incomplete.AB12CD_1.0.0'
  for d in (data_dir, stale, other):
    d.mkdir(parents=True)
  (stale / 'detx_spool_x.tmp').write_bytes(b'half')
  assert spool.remove_incomplete(data_dir) == [stale]
  assert data_dir.exists() and other.exists() and not stale.exists()


def test_preparation_writes_image_sizes(shapes_dir, tmp_path):
  builder = coco.prepare(shapes_dir, 'train', str(tmp_path))
  sizes = np.load(builder.data_path / coco.SIZES_FILE)
  src = coco.data_source(builder)
  assert sizes.dtype == np.int32 and sizes.shape == (len(src), 2)
  assert sizes.tolist() == [[int(r['height']), int(r['width'])]
                            for r in src.__getitems__(range(len(src)))]
  assert not list(tmp_path.glob('detx_coco/*/incomplete.*'))
