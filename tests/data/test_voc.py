"""The Pascal VOC builder (detx/data/voc.py): the XML reader on nine genuine VOC2007
files, the builder on ../shared/data/voc_tiny, a generated two-year tree for the
07+12 default, split names and a dataset with its own labels file."""
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from detx.data import DataError, loader, voc

VOC_TINY = Path(__file__).parents[2].parent / 'shared/data/voc_tiny'

# The nine genuine VOC2007 annotation files, transcribed by hand from the files:
# name -> (filename, width, height, [(name, pose, truncated, difficult, box)]).
REAL = {
    '000001': ('000001.jpg', 353, 500, [('dog', 'Left', 1, 0, (48, 240, 195, 371)),
                                        ('person', 'Left', 1, 0, (8, 12, 352, 498))]),
    '000002': ('000002.jpg', 335, 500, [('train', 'Unspecified', 0, 0, (139, 200, 207, 301))]),
    '000003': ('000003.jpg', 500, 375, [('sofa', 'Unspecified', 0, 0, (123, 155, 215, 195)),
                                        ('chair', 'Left', 0, 0, (239, 156, 307, 205))]),
    '000005': ('000005.jpg', 500, 375, [('chair', 'Rear', 0, 0, (263, 211, 324, 339)),
                                        ('chair', 'Unspecified', 0, 0, (165, 264, 253, 372)),
                                        ('chair', 'Unspecified', 1, 1, (5, 244, 67, 374)),
                                        ('chair', 'Unspecified', 0, 0, (241, 194, 295, 299)),
                                        ('chair', 'Unspecified', 1, 1, (277, 186, 312, 220))]),
    '000007': ('000007.jpg', 500, 333, [('car', 'Unspecified', 1, 0, (141, 50, 500, 330))]),
    '000009': ('000009.jpg', 500, 375, [('horse', 'Right', 0, 0, (69, 172, 270, 330)),
                                        ('person', 'Right', 0, 0, (150, 141, 229, 284)),
                                        ('person', 'Right', 0, 0, (285, 201, 327, 331)),
                                        ('person', 'Left', 0, 0, (258, 198, 297, 329))]),
    '000012': ('000012.jpg', 500, 333, [('car', 'Rear', 0, 0, (156, 97, 351, 270))]),
    '000017': ('000017.jpg', 480, 364, [('person', 'Left', 0, 0, (185, 62, 279, 199)),
                                        ('horse', 'Left', 0, 0, (90, 78, 403, 336))]),
    '000023': ('000023.jpg', 334, 500, [('bicycle', 'Unspecified', 1, 0, (9, 230, 245, 500)),
                                        ('bicycle', 'Frontal', 1, 0, (230, 220, 334, 500)),
                                        ('bicycle', 'Unspecified', 1, 1, (2, 178, 90, 500)),
                                        ('person', 'Unspecified', 1, 0, (2, 1, 117, 369)),
                                        ('person', 'Unspecified', 1, 0, (3, 2, 243, 462)),
                                        ('person', 'Unspecified', 1, 0, (225, 1, 334, 486))]),
}


@pytest.fixture(scope='module')
def voc_tiny():
  if not (VOC_TINY / 'VOCdevkit/VOC2007').is_dir():
    pytest.skip(f'real test data not found at {VOC_TINY}')
  return VOC_TINY


def write_xml(path: Path, filename: str, width: int, height: int, objects) -> None:
  """A VOC annotation file; objects: (name, difficult, (xmin, ymin, xmax, ymax))."""
  objs = ''.join(
      f'<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>'
      f'<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>'
      f'<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>' for n, d, b in objects)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f'<annotation><folder>x</folder><filename>{filename}</filename><size>'
                  f'<width>{width}</width><height>{height}</height><depth>3</depth></size>'
                  f'{objs}</annotation>')


def make_tree(root: Path, years=('2007', '2012'), n: int = 3, classes=voc.VOC_CLASSES,
              lists=('trainval', 'test')) -> Path:
  """DIR/VOCdevkit/VOC<year>/... with `n` 48x40 images per list and year; image k of
  list `name` has one object of class k (two for the first, the second difficult)."""
  for year in years:
    base = root / 'VOCdevkit' / f'VOC{year}'
    for li, name in enumerate(lists):
      ids = [f'{year}_{name}_{k}' for k in range(n)]
      (base / 'ImageSets/Main').mkdir(parents=True, exist_ok=True)
      (base / 'ImageSets/Main' / f'{name}.txt').write_text('\n'.join(ids) + '\n')
      for k, stem in enumerate(ids):
        (base / 'JPEGImages').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / 'JPEGImages' / f'{stem}.jpg'),
                    np.full((40, 48, 3), 40 * k + li, np.uint8))
        objects = [(classes[k % len(classes)], 0, (2 + k, 3, 30, 20 + k))]
        if k == 0:
          objects.append((classes[1], 1, (1, 1, 48, 40)))
        write_xml(base / 'Annotations' / f'{stem}.xml', f'{stem}.jpg', 48, 40, objects)
  return root


def test_real_voc2007_xml_field_by_field(voc_tiny):
  for stem, (filename, width, height, objects) in REAL.items():
    ann = voc.read_xml(voc_tiny / 'real_voc2007_annotations' / f'{stem}.xml')
    assert (ann['filename'], ann['width'], ann['height']) == (filename, width, height), stem
    got = [(o['name'], o['pose'], int(o['truncated']), int(o['difficult']), tuple(o['bbox']))
           for o in ann['objects']]
    assert got == [(n, p, t, d, tuple(float(v) for v in b)) for n, p, t, d, b in objects], stem


def _xml_objects(xml: Path):
  """An independent read of one file: [(name, difficult, [x1, y1, x2, y2])]."""
  root = ET.parse(xml).getroot()
  return [(o.find('name').text, int(o.find('difficult').text),
           [float(o.find('bndbox').find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
          for o in root.iter('object')]


@pytest.mark.parametrize('split,images,objects,difficult', [
    ('voc2007_trainval', 65, 385, 57), ('test', 69, 425, 71)])
def test_builder_on_voc_tiny(voc_tiny, tmp_cache, split, images, objects, difficult):
  """Counts from voc_tiny/SOURCE.md; every record against its XML read here (Paddle's
  voc_loader: boxes as written, x2 / y2 clipped to W-1 / H-1; alphabetical labels)."""
  ds = loader.Dataset(voc_tiny, split, cache_dir=str(tmp_cache), name='voc')
  assert len(ds) == images and ds.category_names == list(voc.VOC_CLASSES)
  assert ds.category_ids == list(range(1, 21))
  main = voc_tiny / 'VOCdevkit/VOC2007/ImageSets/Main'
  stems = (main / ('test.txt' if split == 'test' else 'trainval.txt')).read_text().split()
  total = hard = 0
  for i, stem in enumerate(stems):
    ex = ds.annotations(i)
    assert ex['image_id'] == i and ex['file_name'] == f'VOC2007/JPEGImages/{stem}.jpg'
    want = _xml_objects(voc_tiny / 'VOCdevkit/VOC2007/Annotations' / f'{stem}.xml')
    w, h = ex['width'], ex['height']
    boxes = [[x1, y1, min(x2, w - 1), min(y2, h - 1)] for _, _, (x1, y1, x2, y2) in want]
    np.testing.assert_array_equal(ex['boxes'], np.asarray(boxes, np.float32).reshape(-1, 4))
    assert [voc.VOC_CLASSES[c] for c in ex['labels']] == [n for n, _, _ in want]
    assert ex['difficult'].tolist() == [bool(d) for _, d, _ in want]
    assert not ex['is_crowd'].any()
    total, hard = total + len(want), hard + sum(d for _, d, _ in want)
  assert (total, hard) == (objects, difficult)
  image = ds[0]['image']
  assert image.shape == (ds[0]['height'], ds[0]['width'], 3) and image.dtype == np.uint8


def test_default_splits_07_plus_12(tmp_path, tmp_cache):
  """'train' = voc2007_trainval + voc2012_trainval (in that order), 'val' = voc2007_test."""
  root = make_tree(tmp_path / 'two_years')
  train = loader.Dataset(root, 'train', cache_dir=str(tmp_cache), name='voc')
  names = [train.annotations(i)['file_name'] for i in range(len(train))]
  assert names == [f'VOC{y}/JPEGImages/{y}_trainval_{k}.jpg'
                   for y in ('2007', '2012') for k in range(3)]
  assert train.image_ids.tolist() == list(range(6))
  first = train[0]
  assert first['labels'].tolist() == [0, 1] and first['difficult'].tolist() == [False, True]
  np.testing.assert_array_equal(first['boxes'], [[2, 3, 30, 20], [1, 1, 47, 39]])
  assert int(first['image'][0, 0, 0]) in range(0, 4)  # image 0 of list 0 is black
  val = loader.Dataset(root, 'val', cache_dir=str(tmp_cache), name='voc')
  assert [val.annotations(i)['file_name'] for i in range(3)] == [
      f'VOC2007/JPEGImages/2007_test_{k}.jpg' for k in range(3)]
  other = loader.Dataset(root, 'voc2012_test+voc2007_trainval', cache_dir=str(tmp_cache),
                         name='voc', limit=4)
  assert len(other) == 4 and other.annotations(3)['file_name'].startswith('VOC2007/')


def test_split_names(tmp_path):
  assert voc.parse_split('train') == [('voc2007', 'trainval'), ('voc2012', 'trainval')]
  assert voc.parse_split('VOC2012_val') == [('VOC2012', 'val')]
  with pytest.raises(DataError, match='<folder>_<list>'):
    voc.parse_split('voc2007')
  root = make_tree(tmp_path / 'one_year', years=('2007',), n=1)
  with pytest.raises(DataError, match=r"no folder .*VOC2012 .*train_split='voc2007_trainval'"):
    voc.layout(root, 'train')
  with pytest.raises(DataError, match='list file .*trainval_x.txt is missing'):
    voc.layout(root, 'voc2007_trainval_x')
  with pytest.raises(DataError, match='parent of VOCdevkit'):
    voc.layout(tmp_path, 'val')


def test_labels_file(tmp_path, tmp_cache):
  """A VOC-format dataset with its own classes in DIR/label_list.txt."""
  root = make_tree(tmp_path / 'custom', years=('2007',), n=2, classes=('wheel', 'door'))
  (root / 'label_list.txt').write_text('wheel\ndoor\n')
  ds = loader.Dataset(root, 'val', cache_dir=str(tmp_cache), name='voc')
  assert ds.category_names == ['wheel', 'door'] and ds.num_classes == 2
  assert ds.annotations(1)['labels'].tolist() == [1]
  (root / 'label_list.txt').write_text('wheel\n')
  with pytest.raises(DataError, match=r"2007_test_0.xml: object 1 \(door\) is not a known class.*label_list"):
    loader.Dataset(root, 'val', cache_dir=str(tmp_cache), name='voc')


def test_yolo_pipeline_reads_voc(voc_tiny, data_config):
  """A VOC config's data path: loader.build by data.name, YOLO train and eval batches."""
  from detx.data import pipelines
  c = data_config(voc_tiny, **{'data.name': 'voc', 'data.train_split': 'voc2007_trainval',
                               'data.train_limit': 4, 'eval.limit': 3, 'data.max_size': 64,
                               'data.train_sizes': (64,), 'data.mixup_epochs': 0,
                               'train.batch_size': 2, 'eval.batch_size': 2, 'eval.size': 64})
  train_ds, val_ds = loader.build(c, c.data.train_split), loader.build(c, c.eval.split)
  assert (len(train_ds), len(val_ds)) == (4, 3) and val_ds.split == 'val'
  pipeline = pipelines.for_config(c)
  it = pipeline.train_iterator(train_ds)
  batch = next(it)
  it.close()
  assert batch['image'].shape[:3] == (2, 64, 64) and batch['box_mask'].any()
  with pipeline.eval_iterator(val_ds) as batches:
    evals = list(batches)
  assert [b['valid'].tolist() for b in evals] == [[True, True], [True, False]]
  assert [int(i) for b in evals for i in b['image_id'][b['valid']]] == [0, 1, 2]


def test_edited_xml_is_prepared_again(tmp_path, tmp_cache):
  """The prepared split's fingerprint covers each listed XML file: an edit in place
  (the directory's mtime unchanged) prepares the split again."""
  root = make_tree(tmp_path / 'edit', years=('2007',), n=2)
  first = loader.Dataset(root, 'val', cache_dir=str(tmp_cache), name='voc')
  assert first.annotations(1)['labels'].tolist() == [1]
  xml = root / 'VOCdevkit/VOC2007/Annotations/2007_test_1.xml'
  xml.write_text(xml.read_text().replace('<name>bicycle</name>', '<name>bird</name>'))
  again = loader.Dataset(root, 'val', cache_dir=str(tmp_cache), name='voc')
  assert again.cache_path != first.cache_path
  assert again.annotations(1)['labels'].tolist() == [2]
