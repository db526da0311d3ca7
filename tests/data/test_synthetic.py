"""The generated shapes dataset."""
import json
import time

import numpy as np
import pytest
from pycocotools.coco import COCO

from detx.data import loader, synthetic


def _files(root):
  return {p.relative_to(root): p.read_bytes()
          for p in sorted(root.rglob('*')) if p.is_file()}


def test_deterministic(tmp_path):
  kw = dict(num_train=6, num_val=3, image_size=64)
  a = _files(synthetic.generate(tmp_path / 'a', seed=3, **kw))
  b = _files(synthetic.generate(tmp_path / 'b', seed=3, **kw))
  c = _files(synthetic.generate(tmp_path / 'c', seed=4, **kw))
  assert a == b
  assert a.keys() == c.keys() and a != c


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # pycocotools/numpy 2
def test_valid_coco(shapes_dir):
  for split, n in (('train', 24), ('val', 8)):
    gt = COCO(str(shapes_dir / f'annotations/instances_{split}2017.json'))
    assert len(gt.getImgIds()) == n
    assert [c['name'] for c in gt.loadCats(gt.getCatIds())] == [
        'circle', 'square', 'triangle', 'cross']
    for image_id in gt.getImgIds():
      info = gt.loadImgs(image_id)[0]
      assert (shapes_dir / f'{split}2017' / info['file_name']).is_file()
      anns = gt.loadAnns(gt.getAnnIds(imgIds=image_id))
      assert 1 <= len(anns) <= 6
      for a in anns:
        x, y, w, h = a['bbox']
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
        assert 0.1 * 64 <= max(w, h) <= 0.62 * 64
        assert a['iscrowd'] == 0 and a['area'] > 0
        poly = np.array(a['segmentation'][0]).reshape(-1, 2)
        np.testing.assert_allclose(poly.min(0), [x, y], atol=0.02)
        np.testing.assert_allclose(poly.max(0), [x + w, y + h], atol=0.03)
        assert gt.annToMask(a).sum() > 0


def test_shapes_are_drawn_in_class_colours(shapes_dir, data_config):
  """The pixel at each circle/square centre has its class colour."""
  ds = loader.build(data_config(shapes_dir), 'train')
  hits = total = 0
  for i in range(ds.num_images):
    ex = ds[i]
    order = np.arange(len(ex['boxes']))
    for k in order:
      cat = ds.category_ids[ex['labels'][k]]
      if cat not in (1, 2):  # centre of a triangle/cross may be background
        continue
      # skip centres covered by a later shape
      x1, y1, x2, y2 = ex['boxes'][k]
      cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
      later = ex['boxes'][k + 1:]
      if ((later[:, 0] <= cx) & (cx <= later[:, 2]) & (later[:, 1] <= cy) &
          (cy <= later[:, 3])).any():
        continue
      pixel = ex['image'][int(cy), int(cx)].astype(float)
      total += 1
      hits += np.abs(pixel - synthetic.COLOURS[cat]).max() < 60
  assert total > 10 and hits / total > 0.95


def test_default_size_is_fast(tmp_path):
  t = time.time()
  out = synthetic.generate(tmp_path / 'd')
  assert time.time() - t < 10
  ann = json.loads((out / 'annotations/instances_train2017.json').read_text())
  assert len(ann['images']) == 320
  assert len(list((out / 'val2017').iterdir())) == 64


def test_ensure_is_atomic_and_idempotent(tmp_path):
  target = tmp_path / 'cache' / 'shapes'
  out = synthetic.ensure(target, num_train=4, num_val=2, image_size=64)
  assert out == target
  stamp = (target / 'annotations/instances_train2017.json').stat().st_mtime_ns
  assert synthetic.ensure(target) == target  # exists: not regenerated
  assert (target / 'annotations/instances_train2017.json'
          ).stat().st_mtime_ns == stamp
  assert [p.name for p in (tmp_path / 'cache').iterdir()] == ['shapes']


def test_generate_refuses_non_empty_dir(tmp_path):
  (tmp_path / 'x').mkdir()
  (tmp_path / 'x' / 'file').write_text('')
  with pytest.raises(FileExistsError):
    synthetic.generate(tmp_path / 'x')


def test_loader_generates_synthetic(tmp_path, data_config):
  data_dir = tmp_path / 'gen'
  c = data_config(data_dir, **{'data.name': 'synthetic'})
  ds = loader.build(c, 'val')
  assert data_dir.is_dir()
  assert ds.num_images == 64
  assert ds.category_names == ['circle', 'square', 'triangle', 'cross']
