"""The COCO tfds builder: real data, reading without TensorFlow, prepared
data never half-written, one cache entry per source directory."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from detx.data import DataError, coco, loader
from tests.data.helpers import build, no_prepared_data, read_json

REPO = Path(__file__).parents[2]


@pytest.fixture(scope='module')
def tiny(coco_tiny_dir, tmp_cache):
  return {split: coco.prepare(coco_tiny_dir, split, str(tmp_cache))
          for split in ('train', 'val')}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_counts_and_order(tiny, coco_tiny_dir, split):
  ann = read_json(coco_tiny_dir / f'annotations/instances_{split}2017.json')
  ids = sorted(im['id'] for im in ann['images'])
  builder = tiny[split]
  assert len(ids) == 80
  assert builder.info.splits[split].num_examples == 80
  assert list(builder.info.metadata['image_ids']) == ids
  source = coco.data_source(builder)
  assert len(source) == 80
  # Records are stored in ascending image-id order.
  assert [source[i]['image_id'] for i in (0, 1, 40, 79)] == [
      ids[0], ids[1], ids[40], ids[79]]


def test_known_image(coco_tiny_dir, data_config):
  """Image 184324 (val) has a crowd RLE annotation among polygon ones."""
  ann = read_json(coco_tiny_dir / 'annotations/instances_val2017.json')
  image_id = 184324
  info = next(im for im in ann['images'] if im['id'] == image_id)
  anns = [a for a in ann['annotations'] if a['image_id'] == image_id]
  ds = loader.build(data_config(coco_tiny_dir), 'val')
  i = list(ds.image_ids).index(image_id)
  ex = ds[i]
  assert ex['image_id'] == image_id
  assert ex['file_name'] == info['file_name']
  assert (ex['height'], ex['width']) == (info['height'], info['width'])
  assert ex['image'].dtype == np.uint8
  assert ex['image'].shape == (info['height'], info['width'], 3)
  expected_image = cv2.imread(str(coco_tiny_dir / 'val2017' /
                                  info['file_name']))[..., ::-1]
  np.testing.assert_array_equal(ex['image'], expected_image)
  # Same annotations, same order (json order), boxes converted Paddle-style.
  assert list(ex['ann_ids']) == [a['id'] for a in anns]
  w, h = info['width'], info['height']
  for k, a in enumerate(anns):
    x, y, bw, bh = a['bbox']
    x1, y1 = max(0.0, x), max(0.0, y)
    want = [x1, y1, min(w - 1.0, x1 + max(0.0, bw - 1)),
            min(h - 1.0, y1 + max(0.0, bh - 1))]
    np.testing.assert_allclose(ex['boxes'][k], want, rtol=0, atol=1e-4)
    assert ds.category_ids[ex['labels'][k]] == a['category_id']
    assert ex['category_ids'][k] == a['category_id']
    assert bool(ex['is_crowd'][k]) == bool(a['iscrowd'])
    assert ex['area'][k] == pytest.approx(a['area'], rel=1e-6)
    assert json.loads(ex['segmentation'][k]) == a['segmentation']
  assert ex['is_crowd'].any()


def test_category_mapping(coco_tiny_dir, data_config):
  ann = read_json(coco_tiny_dir / 'annotations/instances_train2017.json')
  cats = sorted((c['id'], c['name']) for c in ann['categories'])
  ds = loader.build(data_config(coco_tiny_dir), 'train')
  assert ds.category_ids == [c for c, _ in cats]
  assert ds.category_names == [n for _, n in cats]
  assert ds.num_classes == 80
  # Round trip: contiguous label -> COCO id -> label.
  index = {c: i for i, c in enumerate(ds.category_ids)}
  ex = ds[0]
  labels = ex['labels']
  assert all(index[ds.category_ids[l]] == l for l in labels)
  assert Path(ds.annotation_file) == (
      coco_tiny_dir / 'annotations/instances_train2017.json').resolve()
  assert ds.num_images == 80 and list(ds.image_ids) == sorted(ds.image_ids)


def test_reads_without_tensorflow(coco_tiny_dir, tmp_path):
  """Preparing and reading in a fresh process never imports TensorFlow."""
  code = textwrap.dedent(f"""
      import json, sys
      try:
        import tensorflow
        importable = True
      except ImportError:
        importable = False
      from detx.data import coco
      b = coco.prepare({str(coco_tiny_dir)!r}, 'val', {str(tmp_path)!r})
      ex = coco.to_example(coco.data_source(b)[5])
      print(json.dumps(dict(importable=importable,
                            loaded='tensorflow' in sys.modules,
                            shape=list(ex['image'].shape))))
      """)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run([sys.executable, '-c', code], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == dict(importable=False, loaded=False,
                        shape=result['shape'])
  assert len(result['shape']) == 3 and result['shape'][2] == 3


def test_dirs_do_not_collide(shapes_dir, tmp_path):
  a = tmp_path / 'a'
  b = tmp_path / 'b'
  shutil.copytree(shapes_dir, a)
  shutil.copytree(shapes_dir, b)
  # Drop b's last val image from its json: a different dataset.
  ann_file = b / 'annotations/instances_val2017.json'
  ann = read_json(ann_file)

  def drop_last_image():
    last = ann['images'].pop()['id']
    ann['annotations'] = [x for x in ann['annotations']
                          if x['image_id'] != last]
    ann_file.write_text(json.dumps(ann))

  drop_last_image()
  cache = str(tmp_path / 'cache')
  ba = coco.prepare(a, 'val', cache)
  bb = coco.prepare(b, 'val', cache)
  assert ba.data_path != bb.data_path
  assert len(coco.data_source(ba)) == 8
  assert len(coco.data_source(bb)) == 7
  # Editing the json again re-prepares (new fingerprint).
  drop_last_image()
  os.utime(ann_file, ns=(1, 1))
  assert len(coco.data_source(coco.prepare(b, 'val', cache))) == 6


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_image_leaves_nothing_behind(data_config, broken, tmp_path,
                                             damage):
  path = sorted((broken / 'val2017').iterdir())[5]
  good = path.read_bytes()
  bad = good[:len(good) * 2 // 3] if damage == 'truncated' else b'x' * 100
  path.write_bytes(bad)
  cache = tmp_path / 'cache'
  with pytest.raises(DataError, match=f'corrupt or truncated image {path}'):
    build(data_config, broken, **{'data.cache_dir': str(cache)})
  # tfds wrote into a temporary directory: nothing a later run could use.
  assert no_prepared_data(cache)
  assert not coco.make_builder(broken, 'val', str(cache)).is_prepared()
  # Repaired in place (same json, same fingerprint): prepares from scratch.
  path.write_bytes(good)
  ds = build(data_config, broken, **{'data.cache_dir': str(cache)})
  assert ds.num_images == 8 and ds[5]['image'].shape == (64, 64, 3)
