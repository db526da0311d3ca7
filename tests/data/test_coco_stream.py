"""The streamed annotation reader (detx/data/coco_stream.py + the sqlite grouping of
annotations.scan_annotations) against `reference_scan`, the json.load-and-group-in-
memory reader it replaced (rewritten here as the oracle): same records, fields,
types, order, report and error messages, on coco_tiny's real files and on generated
edge cases, with chunks small enough to cut every token."""
import codecs
import json
import math

import numpy as np
import pytest

from detx.data import DataError, annotations, coco_stream


def reference_scan(path, bad_boxes='error'):
  """json.load, then every check and record of scan_annotations in memory."""
  where = f'annotation file {path}'
  with open(path, 'rb') as f:
    d = json.load(f)
  cats = sorted((int(c['id']), str(c['name'])) for c in d['categories'])
  cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
  images, errors, report = {}, [], annotations.new_report()
  for im in d['images']:
    rec = dict(id=int(im['id']), file_name=str(im['file_name']),
               height=int(im['height']), width=int(im['width']), objects=[])
    if rec['height'] <= 0 or rec['width'] <= 0:
      errors.append(('bad_image_size', f'{where}: image id {rec["id"]} '
                     f'({rec["file_name"]}) has size {rec["width"]}x{rec["height"]}'))
    images[rec['id']] = rec
  for a in d['annotations']:
    aid, image_id, cat = int(a['id']), int(a['image_id']), int(a['category_id'])
    bbox = [float(v) for v in a['bbox']]
    if image_id not in images:
      errors.append(('unknown_image', f'{where}: annotation id {aid} refers to '
                     f'unknown image id {image_id}'))
      continue
    im = images[image_id]
    what = f'{where}: annotation id {aid} (image {im["file_name"]})'
    fix = ". Fix the annotation or set data.bad_boxes='drop'"
    if cat not in cat_index:
      if bad_boxes == 'drop':
        report['dropped_unknown_category'].append(aid)
      else:
        errors.append(('unknown_category', f'{what} has unknown category id {cat}{fix}'))
      continue
    problem = None
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
      problem = f'has an invalid bbox {bbox}'
    elif bbox[2] <= 0 or bbox[3] <= 0:
      problem = f'has a non-positive width/height: bbox {bbox}'
    else:
      box = annotations.convert_box(bbox, im['width'], im['height'])
      if box[2] < box[0] or box[3] < box[1]:
        problem = f'lies outside the {im["width"]}x{im["height"]} image: bbox {bbox}'
    if problem is not None:
      (report['dropped_boxes'].append(aid) if bad_boxes == 'drop'
       else errors.append(('bad_box', f'{what} {problem}{fix}')))
      continue
    x, y, w, h = bbox
    if x < 0 or y < 0 or x + w > im['width'] or y + h > im['height']:
      report['clipped_boxes'].append(aid)
    im['objects'].append(dict(
        bbox=np.asarray(box, np.float32), label=cat_index[cat], category_id=cat,
        is_crowd=bool(a.get('iscrowd', 0)), area=float(a.get('area', w * h)), id=aid,
        segmentation=json.dumps(a.get('segmentation', []), separators=(',', ':'))))
  return dict(categories=cats, images=[images[k] for k in sorted(images)],
              report=report, errors=errors, num_annotations=len(d['annotations']))


def as_text(parsed) -> str:
  """Everything scan_annotations returns, types included (repr), arrays as lists."""
  images = [{**im, 'objects': [{**o, 'bbox': (o['bbox'].dtype, o['bbox'].tolist())}
                               for o in im['objects']]} for im in parsed['images']]
  return repr({**parsed, 'images': images})


def edge_cases():
  """Keys in an unusual order (annotations first, categories last), annotations out of
  image order, an image without annotations, unicode, a crowd RLE, nested polygon
  lists, floats / ints / exponents, a clipped box, a bad box, an unknown category."""
  images = [{'id': 7, 'file_name': 'caf\u00e9 \u6771\u4eac \U0001f600.jpg',
             'height': 40, 'width': 60},
            {'id': 3, 'file_name': 'b.jpg', 'height': 50, 'width': 30, 'extra': [1, {}]},
            {'id': 5, 'file_name': 'empty.jpg', 'height': 10, 'width': 10}]
  anns = [
      {'id': 11, 'image_id': 7, 'category_id': 2, 'bbox': [1, 2.5, 10, 1e1],
       'area': 25, 'iscrowd': 0, 'segmentation': [[1, 2, 3.25, 4, 5, 6e-3]]},
      {'id': 4, 'image_id': 3, 'category_id': 1, 'bbox': [-2, 0, 40, 60],
       'iscrowd': 1, 'segmentation': {'counts': [0, 5, 3, 9999], 'size': [50, 30]}},
      {'id': 12, 'image_id': 7, 'category_id': 1, 'bbox': [0, 0, 3, 3],
       'segmentation': [[0, 0, 3, 0, 3, 3], [0, 0, 1, 1, 0, 1]],
       'note': 'na\u00efve "quoted" \\ \n'},
      {'id': 2, 'image_id': 3, 'category_id': 9, 'bbox': [0, 0, 3, 3]},
      {'id': 9, 'image_id': 3, 'category_id': 2, 'bbox': [1, 1, 0, 3]},
      {'id': 1, 'image_id': 7, 'category_id': 2, 'bbox': ['5', '6', '7', '8'],
       'area': 1.5e2, 'segmentation': []}]
  cats = [{'id': 2, 'name': 'd\u00f6g'}, {'id': 1, 'name': 'cat'}]
  return {'info': {'description': 'x' * 50, 'n': [1, 2]}, 'annotations': anns,
          'licenses': [], 'images': images, 'categories': cats}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_tiny_records_equal_json_load(coco_tiny_dir, split, monkeypatch):
  path, _ = annotations.layout(coco_tiny_dir, split)
  for bad_boxes in ('error', 'drop'):
    assert (as_text(annotations.scan_annotations(path, bad_boxes))
            == as_text(reference_scan(path, bad_boxes)))
  monkeypatch.setattr(coco_stream, 'CHUNK', 4099)  # items cut across chunks
  assert as_text(annotations.scan_annotations(path)) == as_text(reference_scan(path))


@pytest.mark.parametrize('chunk', [1, 5, 64, 1 << 20])
def test_edge_cases_equal_json_load(tmp_path, monkeypatch, chunk):
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(edge_cases(), indent=chunk % 3 or None, ensure_ascii=False),
                  encoding='utf-8')
  monkeypatch.setattr(coco_stream, 'CHUNK', chunk)
  work = tmp_path / 'work'
  work.mkdir()
  for bad_boxes in ('error', 'drop'):
    got = annotations.scan_annotations(path, bad_boxes, work_dir=work)
    assert as_text(got) == as_text(reference_scan(path, bad_boxes))
    assert not list(work.iterdir())  # the sqlite file is gone once written
  assert [im['id'] for im in got['images']] == [3, 5, 7]
  assert [o['id'] for o in list(got['images'])[2]['objects']] == [11, 12, 1]
  assert got['num_annotations'] == 6
  # Iterating again reads the same; empty images are left out lazily.
  assert as_text(got) == as_text(annotations.scan_annotations(path, 'drop'))
  report = annotations.new_report()
  kept = annotations.filter_empty(got['images'], 'drop', report)
  assert [im['id'] for im in kept] == [3, 7] and len(kept) == 2
  assert report['dropped_empty_images'] == ['empty.jpg']


def test_iter_arrays_items_equal_json_load(tmp_path):
  doc = edge_cases()
  doc['images'].append({'s': '\U0001f600 \\u00e9 \t', 'n': [-0.0, 1e-300, 12345678901234567890,
                                                        True, None, {'a': []}]})
  path = tmp_path / 'a.json'
  # A UTF-8 byte order mark is skipped, as json.load of a binary file does.
  path.write_bytes(codecs.BOM_UTF8 + ('\n ' + json.dumps(doc, indent=1) + ' \n').encode())
  for chunk in (1, 2, 3, 7, 1000):
    got = {}
    for key, i, item in coco_stream.iter_arrays(path, chunk=chunk):
      assert i == len(got.setdefault(key, []))
      got[key].append(item)
    assert got == {k: doc[k] for k in ('annotations', 'images', 'categories')}


def test_unknown_image_same_error(tmp_path):
  doc = edge_cases()
  doc['annotations'][2]['image_id'] = 404
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(doc))
  got = annotations.scan_annotations(path)
  assert got['errors'] == reference_scan(path)['errors']
  assert got['errors'][0] == ('unknown_image', f'annotation file {path}: annotation '
                              'id 12 refers to unknown image id 404')
  with pytest.raises(DataError, match=r'annotation id 12 refers to unknown image id '
                     r'404 \(and 2 more problems'):
    annotations.parse_annotations(path)


@pytest.mark.parametrize('text', [
    '{"images": [], "annotations": [{"id": 1,}], "categories": []}',
    '{"images": [{"id": 1}\n {"id": 2}], "annotations": [], "categories": []}',
    '{"images": [], "annotations": [], "categories": [1, 2',
    '{"images": [], "annotations": [], "categories": []} []',
    '{"images": [], "annotations": [], "categories": [tru]}',
    '{"images": [], "annotations": [], "categories": ["\\x"]}',
    '{"images" [], "annotations": [], "categories": []}',
    '\n\n  ', '[1, 2', '{"images": [], 3: 4}'])
def test_malformed_json_names_file_line_column_byte(tmp_path, text):
  path = tmp_path / 'bad.json'
  path.write_text(text)
  with pytest.raises(json.JSONDecodeError) as want:
    json.loads(text)
  for chunk in (1, 4, 1 << 20):
    with pytest.raises(DataError) as e:
      list(coco_stream.iter_arrays(path, chunk=chunk))
    assert str(e.value).startswith(
        f'malformed JSON in annotation file {path} at line {want.value.lineno}, '
        f'column {want.value.colno} (byte {want.value.pos}')
    assert str(e.value).endswith(want.value.msg) and '\n' not in str(e.value)


def test_malformed_json_names_the_item(tmp_path):
  doc = edge_cases()
  path = tmp_path / 'bad.json'
  text = json.dumps(doc)
  cut = text.index('"id": 12')
  path.write_text(text[:cut] + '"id": 12,, ' + text[cut + 9:])
  with pytest.raises(DataError, match=r'\(byte \d+, in "annotations" item 2\): '
                     'Expecting property name'):
    annotations.parse_annotations(path)


def test_not_utf8_nor_object_nor_lists(tmp_path):
  path = tmp_path / 'a.json'
  path.write_bytes(b'{"images": [], "x": "\xc3\xa9\xff"}')
  with pytest.raises(DataError, match=r'a\.json: not UTF-8 text \(byte 23\)$'):
    annotations.scan_annotations(path)
  path.write_text('[{"images": []}]')
  with pytest.raises(DataError, match='expected a JSON object'):
    annotations.scan_annotations(path)
  for text, missing in [('{"images": [], "annotations": []}', 'categories'),
                        ('{"images": {}, "annotations": [], "categories": []}', 'images')]:
    path.write_text(text)
    with pytest.raises(DataError, match=f'missing or invalid "{missing}" list'):
      annotations.scan_annotations(path)
  path.write_text('{"images": [], "annotations": [], "categories": [], "images": []}')
  with pytest.raises(DataError, match='key "images" appears twice'):
    annotations.scan_annotations(path)


@pytest.mark.parametrize('damage, message', [
    (lambda d: d['images'].append(dict(d['images'][0])), 'duplicate image id 7'),
    (lambda d: d['annotations'].append(dict(d['annotations'][0])),
     'duplicate annotation id 11'),
    (lambda d: d['images'][1].pop('height'), r"invalid image entry .*KeyError\('height'"),
    (lambda d: d['annotations'][3].update(bbox=None), 'invalid annotation .*TypeError'),
    # json.load's order: categories before images before annotations.
    (lambda d: (d['annotations'].append({'id': 'x'}), d['images'].append({}),
                d['categories'].append({'id': 3})), r"invalid category entry \(KeyError"),
    (lambda d: (d['annotations'].append({'id': 'x'}), d['images'].append({})),
     r'invalid image entry \{\}'),
    (lambda d: d['categories'].append({'id': 1, 'name': 'again'}), 'duplicate category ids')])
def test_invalid_entries_raise_in_json_load_order(tmp_path, damage, message):
  doc = edge_cases()
  damage(doc)
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(doc))
  with pytest.raises(DataError, match=f'annotation file .*a.json: {message}'):
    annotations.scan_annotations(path, work_dir=tmp_path)
  assert [p.name for p in tmp_path.iterdir()] == ['a.json']


def _synthetic(n: int) -> dict:
  """n 640x480 images with 4 polygon annotations each (ids and boxes vary)."""
  anns = [{'id': k + 1, 'image_id': k // 4 + 1, 'category_id': 1 + k % 3, 'iscrowd': 0,
           'area': 100.0 + k, 'bbox': [k % 500, k % 300, 20.5, 30.25],
           'segmentation': [[k % 500, k % 300, k % 500 + 20, k % 300, k % 500, k % 300 + 30]]}
          for k in range(4 * n)]
  return {'images': [{'id': i + 1, 'file_name': f'{i + 1:012d}.jpg', 'height': 480,
                      'width': 640} for i in range(n)],
          'annotations': anns,
          'categories': [{'id': c, 'name': f'c{c}'} for c in (1, 2, 3)]}


def test_memory_does_not_grow_with_the_file(tmp_path, monkeypatch):
  """Python's peak allocation while scanning and reading every record back is the
  same (within 128 KiB: where chunks happen to cut) for 250 and 2000 images (1k / 8k
  annotations; one more Python int per annotation would add 250 KiB), and a tenth of
  json.load's for 2000."""
  import tracemalloc
  monkeypatch.setattr(coco_stream, 'CHUNK', 1 << 14)  # the windows, small enough to
  monkeypatch.setattr(annotations, 'BATCH', 128)     # show at this size
  peaks = []
  for n in (10, 250, 2000):  # 10: a warm-up (first-call allocations)
    path = tmp_path / f'{n}.json'
    path.write_text(json.dumps(_synthetic(n)))
    tracemalloc.start()
    try:
      parsed = annotations.scan_annotations(path)
      count = sum(len(im['objects']) for im in parsed['images'])
      peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
      tracemalloc.stop()
    assert count == 4 * n and not parsed['errors']
  assert peaks[2] - peaks[1] < 128 << 10, peaks
  text = path.read_text()
  tracemalloc.start()
  try:
    json.loads(text)
    loaded = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert loaded > 10 * peaks[2], (loaded, peaks)


def test_a_killed_scans_file_is_removed(tmp_path):
  """The sqlite file of a scan whose process died is deleted by the next scan; a live
  process's is left alone."""
  import subprocess
  import sys
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True).stdout.strip()
  orphan = tmp_path / f'detx_annotations_{dead}_x1.sqlite'
  live = tmp_path / f'detx_annotations_{1}_x2.sqlite'  # pid 1 never dies
  other = tmp_path / 'detx_annotations_notapid_x3.sqlite'
  for p in (orphan, live, other):
    p.write_bytes(b'x')
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(edge_cases()))
  annotations.scan_annotations(path, work_dir=tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ['a.json', live.name, other.name])
