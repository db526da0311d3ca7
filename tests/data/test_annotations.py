"""Annotation files: the split layout, and each json defect raises one
DataError naming the file / annotation (or is dropped under data.bad_boxes)."""
import shutil

import numpy as np
import pytest

from detx.data import DataError, annotations
from tests.data.helpers import build, edit_json, no_prepared_data, read_json


def test_missing_data_dir(data_config, tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(DataError) as e:
    build(data_config, missing)
  msg = str(e.value)
  assert str(missing) in msg
  assert 'annotations/instances_val2017.json' in msg
  assert 'val2017/*.jpg' in msg


def test_missing_annotation_file(data_config, broken):
  path = broken / 'annotations/instances_val2017.json'
  path.unlink()
  with pytest.raises(DataError, match='annotation file .*instances_val2017'
                     r'\.json is missing'):
    build(data_config, broken)


def test_missing_image_dir(data_config, broken):
  shutil.rmtree(broken / 'val2017')
  with pytest.raises(DataError, match='image directory .*val2017 is missing'):
    build(data_config, broken)


def test_malformedread_json(data_config, broken, tmp_path):
  path = broken / 'annotations/instances_val2017.json'
  path.write_text(path.read_text()[:-20])
  cache = tmp_path / 'cache'
  with pytest.raises(DataError, match=f'malformed JSON .*{path}'):
    build(data_config, broken, **{'data.cache_dir': str(cache)})
  assert no_prepared_data(cache)


def test_zero_size_box(data_config, broken, tmp_path):
  def zero(ann):
    a = ann['annotations'][2]
    a['bbox'][2] = 0.0
    return a
  ann = read_json(broken / 'annotations/instances_val2017.json')
  target = ann['annotations'][2]
  file_name = next(im['file_name'] for im in ann['images']
                   if im['id'] == target['image_id'])
  edit_json(broken, zero)
  with pytest.raises(DataError) as e:
    build(data_config, broken)
  assert f'annotation id {target["id"]}' in str(e.value)
  assert file_name in str(e.value)
  assert "bad_boxes='drop'" in str(e.value)
  # Opt-in: drop such boxes.
  ds = build(data_config, broken, **{'data.bad_boxes': 'drop'})
  ids = np.concatenate([ds[i]['ann_ids'] for i in range(ds.num_images)])
  assert target['id'] not in ids
  assert len(ids) == len(ann['annotations']) - 1


def test_negative_size_box(data_config, broken):
  def neg(ann):
    ann['annotations'][0]['bbox'][3] = -4.0
  ann = edit_json(broken, neg)
  with pytest.raises(DataError,
                     match=f'annotation id {ann["annotations"][0]["id"]} '):
    build(data_config, broken)


def test_unknown_category(data_config, broken):
  def unknown(ann):
    ann['annotations'][1]['category_id'] = 999
  ann = edit_json(broken, unknown)
  with pytest.raises(DataError, match=(
      f'annotation id {ann["annotations"][1]["id"]} .*unknown category id '
      '999')):
    build(data_config, broken)


def test_scan_collects_every_problem_parse_raises_the_first(broken):
  def damage(ann):
    ann['annotations'][0]['bbox'][2] = 0.0
    ann['annotations'][1]['category_id'] = 999
  ann = edit_json(broken, damage)
  path, _ = annotations.layout(broken, 'val')
  scan = annotations.scan_annotations(path)
  assert [kind for kind, _ in scan['errors']] == ['bad_box', 'unknown_category']
  assert len(scan['images']) == len(ann['images'])
  with pytest.raises(DataError, match=r'annotation id .* \(and 1 more problems'):
    annotations.parse_annotations(path)
  dropped = annotations.scan_annotations(path, bad_boxes='drop')
  assert not dropped['errors']
  assert dropped['report']['dropped_boxes'] == [ann['annotations'][0]['id']]
  assert dropped['report']['dropped_unknown_category'] == [ann['annotations'][1]['id']]


def test_convert_box_is_paddles_legacy_clipped_xyxy():
  assert annotations.convert_box([10, 20, 30, 40], 100, 100) == [10, 20, 39, 59]
  assert annotations.convert_box([-5, 90, 30, 40], 100, 100) == [0, 90, 29, 99]
