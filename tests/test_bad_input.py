"""Bad data stops a run with one clear error naming the file or record, before any
checkpoint is written (and never leaves a partial one)."""
import json
import shutil

import pytest

from detx import train
from detx.data import DataError
from tests.helpers import tiny_config


def _checkpoint_steps(workdir):
  d = workdir / 'checkpoints'
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _broken_copy(tmp_path, name):
  c = tiny_config(tmp_path)  # generates tmp_path/shapes
  src = tmp_path / 'shapes'
  dst = tmp_path / name
  shutil.copytree(src, dst)
  c.data.dir = str(dst)
  c.data.cache_dir = str(tmp_path / f'tfds_{name}')
  return c, dst


def test_missing_data_dir_names_the_expected_layout(tmp_path):
  c = tiny_config(tmp_path)
  c.data.dir = str(tmp_path / 'nowhere')
  c.data.name = 'coco'
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  msg = str(e.value)
  assert 'nowhere' in msg and 'annotations/instances_train2017.json' in msg
  assert _checkpoint_steps(tmp_path / 'run') == []


def test_corrupt_jpeg_is_named(tmp_path):
  c, d = _broken_copy(tmp_path, 'corrupt')
  victim = sorted((d / 'train2017').iterdir())[3]
  victim.write_bytes(victim.read_bytes()[:200])  # truncated
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert victim.name in str(e.value)
  assert _checkpoint_steps(tmp_path / 'run') == []


def test_negative_width_annotation_is_named(tmp_path):
  c, d = _broken_copy(tmp_path, 'negw')
  ann_file = d / 'annotations' / 'instances_train2017.json'
  coco = json.loads(ann_file.read_text())
  bad = coco['annotations'][5]
  bad['bbox'][2] = -4.0
  ann_file.write_text(json.dumps(coco))
  with pytest.raises(DataError) as e:
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert str(bad['id']) in str(e.value)
  assert _checkpoint_steps(tmp_path / 'run') == []


def test_bad_data_after_a_checkpoint_keeps_it(tmp_path):
  """A failure on resume leaves the existing checkpoint intact and loadable."""
  c = tiny_config(tmp_path, steps=3)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3']
  c2, d = _broken_copy(tmp_path, 'later')
  victim = sorted((d / 'train2017').iterdir())[0]
  victim.write_bytes(b'not a jpeg')
  c2.train.steps = 6
  with pytest.raises(DataError):
    train.train_and_evaluate(c2, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3']
  c.train.steps = 4
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  assert _checkpoint_steps(workdir) == ['3', '4']
