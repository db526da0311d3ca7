"""Bad data: a matrix of planted defects on a copy of 8 coco_tiny images.

Each defect is either converted (odd image encodings, EXIF orientation,
boxes partly outside), dropped and counted under a switch (data.bad_boxes,
data.bad_images, data.empty_images) or raised naming the file / annotation
id; the report in the builder's metadata lists every choice, and the check
command prints the same without preparing anything.
"""
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detx.data import DataError, bad_data, check, loader, pipelines
from tests.data.helpers import make_data_config, no_prepared_data

REPO = Path(__file__).parents[2]
# pycocotools' own numpy-2 deprecation, not ours.
pytestmark = pytest.mark.filterwarnings(
    'ignore::DeprecationWarning:pycocotools.*')
SPLIT = 'train'
UNKNOWN_CATEGORY = 9999
IMAGE_DEFECTS = ('grayscale', 'cmyk', 'alpha', '16bit', 'exif', 'truncated',
                 'missing', 'empty')
BOX_DEFECTS = {  # defect -> the image (by defect slot) holding it
    'zero_width': 'grayscale', 'negative_height': 'cmyk',
    'outside': 'alpha', 'unknown_category': '16bit'}
ALL = IMAGE_DEFECTS + tuple(BOX_DEFECTS)
CONVERSIONS = ('grayscale', 'cmyk', 'alpha', '16bit', 'exif', 'outside',
               'empty')  # usable under the default switches
DROP = {'data.bad_boxes': 'drop', 'data.bad_images': 'drop',
        'data.empty_images': 'drop'}


def _pick_images(coco_tiny_dir):
  """The 8 smallest val images with 3..10 non-crowd annotations."""
  ann = json.loads(
      (coco_tiny_dir / 'annotations/instances_val2017.json').read_text())
  counts = {}
  for a in ann['annotations']:
    if not a['iscrowd']:
      counts[a['image_id']] = counts.get(a['image_id'], 0) + 1
  size = lambda im: (coco_tiny_dir / 'val2017' / im['file_name']).stat().st_size
  images = sorted((im for im in ann['images']
                   if 3 <= counts.get(im['id'], 0) <= 10),
                  key=lambda im: (size(im), im['id']))[:len(IMAGE_DEFECTS)]
  ids = {im['id'] for im in images}
  return ann, images, [a for a in ann['annotations'] if a['image_id'] in ids]


def _rgb(path):
  return cv2.imread(str(path), cv2.IMREAD_COLOR
                    | cv2.IMREAD_IGNORE_ORIENTATION)[..., ::-1]


def make_bad(coco_tiny_dir, root: Path, defects=ALL) -> dict:
  """A COCO-format 'train' split at `root` from 8 coco_tiny images, with
  `defects` planted (one image per image defect, box defects on the first
  annotation of their slot's image). Returns what was planted: dir,
  files {defect: file name}, anns {defect: annotation id}, slot (image
  records by defect) and pixels {file name: expected RGB after conversion}.
  """
  src = coco_tiny_dir / 'val2017'
  ann, images, anns = _pick_images(coco_tiny_dir)
  img_dir = root / f'{SPLIT}2017'
  img_dir.mkdir(parents=True)
  (root / 'annotations').mkdir()
  images = [dict(im) for im in images]
  anns = [dict(a, bbox=list(a['bbox'])) for a in anns]
  slot = dict(zip(IMAGE_DEFECTS, images))
  files, ids, pixels = {}, {}, {}
  for defect, im in slot.items():
    name = im['file_name']
    rgb = _rgb(src / name)
    path = img_dir / name
    shutil.copy(src / name, path)
    if defect not in defects:
      continue
    if defect == 'grayscale':
      gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
      path.write_bytes(cv2.imencode('.jpg', gray)[1].tobytes())
      pixels[name] = np.repeat(cv2.imdecode(
          np.frombuffer(path.read_bytes(), np.uint8),
          cv2.IMREAD_UNCHANGED)[..., None], 3, 2)
    elif defect == 'cmyk':
      Image.fromarray(rgb).convert('CMYK').save(path, 'JPEG', quality=95)
      pixels[name] = rgb  # approximately (lossy): compared with a tolerance
    elif defect in ('alpha', '16bit'):
      path.unlink()
      name = name.replace('.jpg', '.png')
      im['file_name'] = name
      path = img_dir / name
      if defect == 'alpha':
        alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)
        rgba = np.dstack([rgb, np.broadcast_to(alpha, rgb.shape[:2])])
        Image.fromarray(rgba, 'RGBA').save(path)
      else:  # 16-bit RGB: v * 257 scales back to exactly v
        cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)
      pixels[name] = rgb
    elif defect == 'exif':
      pil = Image.fromarray(rgb)
      exif = pil.getexif()
      exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
      pil.save(path, 'JPEG', quality=95, exif=exif.tobytes())
      pixels[name] = _rgb(path)  # stored pixels
    elif defect == 'truncated':
      data = path.read_bytes()
      path.write_bytes(data[:len(data) * 3 // 5])
    elif defect == 'missing':
      path.unlink()
    elif defect == 'empty':
      anns = [a for a in anns if a['image_id'] != im['id']]
    files[defect] = name
  for defect, where in BOX_DEFECTS.items():
    if defect not in defects:
      continue
    im = slot[where]
    a = next(a for a in anns if a['image_id'] == im['id'])
    if defect == 'zero_width':
      a['bbox'][2] = 0.0
    elif defect == 'negative_height':
      a['bbox'][3] = -3.0
    elif defect == 'outside':  # partly outside, right and top
      a['bbox'] = [im['width'] - 10.0, -5.0, 40.0, 30.0]
    elif defect == 'unknown_category':
      a['category_id'] = UNKNOWN_CATEGORY
    ids[defect] = a['id']
    files[defect] = im['file_name']
  out = dict(ann, images=images, annotations=anns)
  (root / f'annotations/instances_{SPLIT}2017.json').write_text(
      json.dumps(out))
  return dict(dir=root, files=files, anns=ids, slot=slot, pixels=pixels,
              json=out)


def _build(data_config, data_dir, **overrides):
  return loader.build(data_config(data_dir, **overrides), SPLIT)


@pytest.fixture(scope='module')
def matrix(coco_tiny_dir, tmp_path_factory):
  """Every defect planted (read-only by convention)."""
  return make_bad(coco_tiny_dir, tmp_path_factory.mktemp('bad') / 'bad')


# ---------------------------------------------------------------------------
# Default switches: each defect that is not converted raises, naming it.

@pytest.mark.parametrize('defect,pattern', [
    ('truncated', r'corrupt or truncated image .*{file}.*bad_images=.drop.'),
    ('missing', r'image file .*{file} .*is missing.*bad_images=.drop.'),
    ('zero_width', r'annotation id {ann} \(image {file}\) has a non-positive'
                   r'.*bad_boxes=.drop.'),
    ('negative_height', r'annotation id {ann} \(image {file}\) has a '
                        r'non-positive.*bad_boxes=.drop.'),
    ('unknown_category', r'annotation id {ann} \(image {file}\) has unknown '
                         rf'category id {UNKNOWN_CATEGORY}.*bad_boxes=.drop.'),
])
def test_defect_raises_by_default(coco_tiny_dir, data_config, tmp_path,
                                  defect, pattern):
  bad = make_bad(coco_tiny_dir, tmp_path / 'bad', {defect})
  cache = tmp_path / 'cache'
  with pytest.raises(DataError) as e:
    _build(data_config, bad['dir'], **{'data.cache_dir': str(cache)})
  assert e.match(pattern.format(file=bad['files'][defect],
                                ann=bad['anns'].get(defect)))
  assert no_prepared_data(cache)


def test_malformed_json_names_line_and_column(coco_tiny_dir, data_config,
                                              tmp_path):
  bad = make_bad(coco_tiny_dir, tmp_path / 'bad', ())
  path = bad['dir'] / f'annotations/instances_{SPLIT}2017.json'
  lines = json.dumps(bad['json'], indent=1).splitlines()
  # Line 5 (1-based) loses its value: '"key": ,'.
  key = lines[4].split(':')[0]
  lines[4] = key + ': ,'
  path.write_text('\n'.join(lines))
  with pytest.raises(DataError) as e:
    _build(data_config, bad['dir'])
  assert e.match(f'malformed JSON in annotation file {path} at line 5, '
                 f'column {len(key) + 3}')
  # The check command says the same and exits 1.
  out = io.StringIO()
  assert check.run(data_config(bad['dir']), SPLIT, out=out) == 1
  assert f'{path} at line 5' in out.getvalue()


def test_size_mismatch_hints_at_exif(coco_tiny_dir, data_config, tmp_path):
  """A json written for the displayed (EXIF-rotated) image."""
  bad = make_bad(coco_tiny_dir, tmp_path / 'bad', {'exif'})
  im = bad['slot']['exif']
  ann = bad['json']
  rec = next(r for r in ann['images'] if r['id'] == im['id'])
  rec['width'], rec['height'] = rec['height'], rec['width']
  (bad['dir'] / f'annotations/instances_{SPLIT}2017.json').write_text(
      json.dumps(ann))
  # (boxes beyond the swapped size would be reported first)
  with pytest.raises(DataError, match=f'{im["file_name"]} is .*EXIF '
                     'orientation 6'):
    _build(data_config, bad['dir'], **{'data.bad_boxes': 'drop'})


# ---------------------------------------------------------------------------
# Converted: usable under the default switches, nothing dropped.

def _check_pixels(ds, bad):
  names = {ds[i]['file_name']: i for i in range(ds.num_images)}
  for name, want in bad['pixels'].items():
    ex = ds[names[name]]
    img = ex['image']
    assert img.dtype == np.uint8 and img.shape == (ex['height'],
                                                   ex['width'], 3), name
    assert img.shape == want.shape, name
    if name == bad['files'].get('cmyk'):
      diff = np.abs(img.astype(int) - want.astype(int)).mean()
      assert diff < 4, (name, diff)
    else:
      np.testing.assert_array_equal(img, want, err_msg=name)


def test_conversions_keep_everything(coco_tiny_dir, data_config, tmp_path):
  bad = make_bad(coco_tiny_dir, tmp_path / 'bad', CONVERSIONS)
  files = bad['files']
  ds = _build(data_config, bad['dir'])
  report = ds.report
  assert report['converted_grayscale'] == [files['grayscale']]
  assert report['converted_cmyk'] == [files['cmyk']]
  assert sorted(report['converted_png']) == sorted([files['alpha'],
                                                    files['16bit']])
  assert report['converted_alpha'] == [files['alpha']]
  assert report['converted_16bit'] == [files['16bit']]
  assert report['exif_ignored'] == [files['exif']]
  assert report['clipped_boxes'] == [bad['anns']['outside']]
  assert report['empty_images'] == [files['empty']]
  assert not any(v for k, v in report.items() if k.startswith('dropped'))
  assert ds.num_images == len(IMAGE_DEFECTS)
  n_boxes = sum(len(ds[i]['boxes']) for i in range(ds.num_images))
  assert n_boxes == len(bad['json']['annotations'])
  _check_pixels(ds, bad)
  # The box partly outside is clipped (legacy pixels) to the image, Paddle's
  # way: y1 = max(0, y), then y2 = y1 + h - 1.
  im = bad['slot']['alpha']
  i = list(ds.image_ids).index(im['id'])
  ex = ds[i]
  box = ex['boxes'][list(ex['ann_ids']).index(bad['anns']['outside'])]
  np.testing.assert_allclose(box, [im['width'] - 10, 0, im['width'] - 1, 29])


# ---------------------------------------------------------------------------
# Everything planted, 'drop' switches: exactly the defects go.

@pytest.fixture(scope='module')
def dropped(matrix, tmp_path_factory):
  c = make_data_config(matrix['dir'], tmp_path_factory.mktemp('cache'), **DROP, **{
      'data.train_split': SPLIT, 'data.train_sizes': (96,), 'data.mixup_epochs': 0,
      'data.augment': 'none', 'eval.size': 96, 'eval.batch_size': 2,
      'train.batch_size': 4})
  return c, loader.build(c, SPLIT)


def test_drop_matrix_report(matrix, dropped):
  _, ds = dropped
  files, anns = matrix['files'], matrix['anns']
  report = ds.report
  want = {
      'converted_grayscale': [files['grayscale']],
      'converted_cmyk': [files['cmyk']],
      'converted_png': sorted([files['alpha'], files['16bit']]),
      'converted_alpha': [files['alpha']],
      'converted_16bit': [files['16bit']],
      'exif_ignored': [files['exif']],
      'clipped_boxes': [anns['outside']],
      'dropped_boxes': sorted([anns['zero_width'], anns['negative_height']]),
      'dropped_unknown_category': [anns['unknown_category']],
      'dropped_empty_images': [files['empty']],
      'dropped_missing_images': [files['missing']],
      'dropped_corrupt_images': [files['truncated']],
  }
  got = {k: sorted(v) for k, v in report.items() if v}
  assert got == {k: sorted(v) for k, v in want.items()}
  assert set(report) == set(bad_data.REPORT_KEYS)


def test_drop_matrix_keeps_the_rest(matrix, dropped):
  _, ds = dropped
  slot = matrix['slot']
  gone = {slot[d]['id'] for d in ('truncated', 'missing', 'empty')}
  kept = sorted(im['id'] for im in matrix['json']['images']
                if im['id'] not in gone)
  assert list(ds.image_ids) == kept and ds.num_images == 5
  bad_ids = {matrix['anns'][d] for d in ('zero_width', 'negative_height',
                                         'unknown_category')}
  want = sorted(a['id'] for a in matrix['json']['annotations']
                if a['image_id'] in kept and a['id'] not in bad_ids)
  got = sorted(int(i) for k in range(ds.num_images)
               for i in ds[k]['ann_ids'])
  assert got == want
  _check_pixels(ds, matrix)


def test_drop_matrix_train_batch(dropped):
  config, ds = dropped
  it = pipelines.for_config(config).train_iterator(ds)
  batch = next(it)
  it.close()
  assert batch['image'].shape == (4, 96, 96, 3)
  assert batch['image'].dtype == np.float32
  assert np.isfinite(batch['image']).all()
  assert batch['box_mask'].sum() > 0
  assert set(batch['image_id'].tolist()) <= set(ds.image_ids.tolist())


def test_empty_images_switch_is_train_only(data_config):
  c = data_config('/unused', **{'data.empty_images': 'drop',
                                'data.exif': 'apply'})
  assert loader.data_options(c, 'train') == dict(
      bad_boxes='error', exif='apply', bad_images='error',
      empty_images='drop')
  assert loader.data_options(c, 'val')['empty_images'] == 'keep'
  with pytest.raises(ValueError, match='data.bad_images must be one of'):
    loader.data_options(data_config('/unused', **{
        'data.bad_images': 'skip'}), 'train')


# ---------------------------------------------------------------------------
# EXIF orientation.

def test_exif_apply_rotates_pixels_and_boxes(coco_tiny_dir, data_config,
                                             tmp_path):
  bad = make_bad(coco_tiny_dir, tmp_path / 'bad', {'exif'})
  im = bad['slot']['exif']
  name, h, w = im['file_name'], im['height'], im['width']
  stored = bad['pixels'][name]
  ignore = _build(data_config, bad['dir'])
  apply = _build(data_config, bad['dir'], **{'data.exif': 'apply'})
  assert ignore.cache_path != apply.cache_path
  assert ignore.report['exif_ignored'] == [name]
  assert apply.report['exif_rotated'] == [name]
  i = list(apply.image_ids).index(im['id'])
  a, g = apply[i], ignore[i]
  # 'ignore': the stored pixels and boxes; 'apply': rotated 90 cw, both.
  np.testing.assert_array_equal(g['image'], stored)
  assert (a['height'], a['width']) == (w, h)
  np.testing.assert_array_equal(a['image'], np.rot90(stored, -1))
  x1, y1, x2, y2 = g['boxes'].T
  np.testing.assert_allclose(
      a['boxes'], np.stack([h - 1 - y2, x1, h - 1 - y1, x2], 1), atol=1e-4)
  for sa, sg, crowd in zip(a['segmentation'], g['segmentation'],
                           g['is_crowd']):
    if not crowd:  # polygons: continuous coordinates
      pa = np.reshape(json.loads(sa)[0], (-1, 2))
      pg = np.reshape(json.loads(sg)[0], (-1, 2))
      np.testing.assert_allclose(pa, np.stack([h - pg[:, 1], pg[:, 0]], 1),
                                 atol=1e-4)
  # Other images are untouched.
  j = (i + 1) % apply.num_images
  np.testing.assert_array_equal(apply[j]['image'], ignore[j]['image'])
  np.testing.assert_array_equal(apply[j]['boxes'], ignore[j]['boxes'])


# ---------------------------------------------------------------------------
# python -m detx.data.check

def test_check_reports_defects_without_preparing(matrix, data_config,
                                                 tmp_path):
  cache = tmp_path / 'cache'
  config = data_config(matrix['dir'], **{'data.cache_dir': str(cache)})
  out = io.StringIO()
  assert check.run(config, 'train', out=out) == 1
  text = out.getvalue()
  files, anns = matrix['files'], matrix['anns']
  for defect in ('grayscale', 'cmyk', 'alpha', '16bit', 'exif', 'truncated',
                 'missing', 'empty'):
    assert files[defect] in text, defect
  for defect in ('zero_width', 'negative_height', 'unknown_category',
                 'outside'):
    assert f'{anns[defect]}' in text, defect
  for key in ('converted_grayscale', 'converted_cmyk', 'converted_16bit',
              'converted_alpha', 'exif_ignored', 'clipped_boxes',
              'empty_images', 'bad_box', 'unknown_category',
              'missing_image', 'corrupt_image'):
    assert key in text, key
  assert 'verdict: FAIL (5 defects would raise)' in text
  assert not cache.exists() or no_prepared_data(cache)
  # Per-class counts and distributions of what would be kept (the empty
  # image is kept by default; the erroring ones are not counted).
  assert 'kept: 6 images' in text
  assert 'instances per class' in text and 'boxes per image: max' in text
  assert 'image width: min' in text and 'box sizes' in text

  result = check.check_split(config, 'train')
  kinds = sorted(kind for kind, _ in result['errors'])
  assert kinds == ['bad_box', 'bad_box', 'corrupt_image', 'missing_image',
                   'unknown_category']


def test_check_ok_with_drop_switches(matrix, data_config):
  config = data_config(matrix['dir'], **DROP)
  out = io.StringIO()
  assert check.run(config, 'train', out=out) == 0
  text = out.getvalue()
  for key in ('dropped_boxes', 'dropped_unknown_category',
              'dropped_empty_images', 'dropped_missing_images',
              'dropped_corrupt_images'):
    assert key in text, key
  n = sum(1 for a in matrix['json']['annotations']) - 3
  gone = {matrix['slot'][d]['id'] for d in ('truncated', 'missing')}
  n -= sum(1 for a in matrix['json']['annotations']
           if a['image_id'] in gone and a['id'] not in matrix['anns'].values())
  assert f'kept: 5 images, {n} boxes' in text
  assert 'verdict: OK' in text and 'ERRORS' not in text
  # --split=both also checks eval.split, absent here: exit 1, named.
  out = io.StringIO()
  assert check.run(config, 'both', out=out) == 1
  assert 'instances_val2017.json is missing' in out.getvalue()


def test_check_cli(matrix, coco_tiny_dir, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))

  def cli(*flags):
    return subprocess.run(
        [sys.executable, '-m', 'detx.data.check',
         '--config=configs/yolov3_darknet.py',
         f'--config.data.dir={matrix["dir"]}', '--split=train', *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

  bad = cli()
  assert bad.returncode == 1, bad.stderr[-2000:]
  assert matrix['files']['truncated'] in bad.stdout
  assert f'annotation id {matrix["anns"]["zero_width"]}' in bad.stdout
  ok = cli('--config.data.bad_boxes=drop', '--config.data.bad_images=drop',
           '--nodecode', '--show=2')
  # Headers only: the truncated JPEG's header reads fine, so it is kept.
  assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
  assert 'verdict: OK' in ok.stdout
  assert matrix['files']['missing'] in ok.stdout
