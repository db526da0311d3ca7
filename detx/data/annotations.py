"""COCO annotation files: the split layout, reading and checking the json
(:func:`scan_annotations` collects every problem, :func:`parse_annotations`
raises the first), COCO boxes -> Paddle's legacy pixel boxes, empty images.
No image is read here (detx/data/images.py). The json is streamed
(detx/data/coco_stream.py) and its records grouped per image in a temporary
sqlite file, so memory does not grow with the annotation file (COCO train2017:
860k annotations); the records are read back one image at a time."""
from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from detx.data.bad_data import CHECK_HINT, DataError, check_options, new_report
from detx.data.coco_stream import iter_arrays


def layout(data_dir, split: str) -> tuple[Path, Path]:
  """(annotation json, image directory) of a COCO-format split."""
  data_dir = Path(data_dir)
  return (data_dir / 'annotations' / f'instances_{split}2017.json',
          data_dir / f'{split}2017')


def _expected(data_dir, split):
  ann, img = layout(data_dir, split)
  return f'expected the COCO layout {ann} and {img}/*.jpg'


def check_layout(data_dir, split: str) -> tuple[Path, Path]:
  """Raises DataError unless the split's annotation file and image dir exist."""
  data_dir = Path(data_dir).expanduser()
  ann, img = layout(data_dir, split)
  if not data_dir.is_dir():
    raise DataError(f'data dir {data_dir} does not exist: '
                    f'{_expected(data_dir, split)}')
  if not ann.is_file():
    raise DataError(f'annotation file {ann} is missing: '
                    f'{_expected(data_dir, split)}')
  if not img.is_dir():
    raise DataError(f'image directory {img} is missing: '
                    f'{_expected(data_dir, split)}')
  return ann, img


def convert_box(bbox, width: int, height: int) -> list[float]:
  """COCO [x, y, w, h] -> legacy pixel [x1, y1, x2, y2] (Paddle coco_loader)."""
  x, y, w, h = (float(v) for v in bbox)
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  return [x1, y1, x2, y2]


def _raise_first(errors: list[tuple[str, str]]):
  if errors:
    more = (f' (and {len(errors) - 1} more problems: {CHECK_HINT})'
            if len(errors) > 1 else '')
    raise DataError(errors[0][1] + more)


_SCHEMA = """
CREATE TABLE images (id INTEGER PRIMARY KEY, file_name TEXT, height INTEGER,
                     width INTEGER);
CREATE TABLE anns (seq INTEGER PRIMARY KEY, id INTEGER UNIQUE, image_id INTEGER,
                   category_id INTEGER, x REAL, y REAL, w REAL, h REAL, problem TEXT,
                   area REAL, is_crowd INTEGER, segmentation TEXT);
CREATE TABLE objects (image_id INTEGER, seq INTEGER, label INTEGER, x1 REAL, y1 REAL,
                      x2 REAL, y2 REAL, PRIMARY KEY (image_id, seq)) WITHOUT ROWID;
"""


BATCH = 4096  # annotations checked at once: the scan's bounded window
_compact_json = json.JSONEncoder(separators=(',', ':')).encode  # = json.dumps(...)


class ImageRecords:
  """The image records of a scanned annotation file in ascending image-id order,
  read back one image at a time from the scan's temporary sqlite database:
  iterating yields dict(id, file_name, height, width, objects=[dict(bbox, label,
  category_id, is_crowd, area, id, segmentation)...]), objects in file order.
  ``len()`` is the number of images; iterating again reads them again."""

  def __init__(self, db: sqlite3.Connection, count: int, skip_empty: bool = False):
    self._db, self._count, self._skip_empty = db, count, skip_empty

  def __len__(self) -> int:
    return self._count

  def __iter__(self):
    images = self._db.execute('SELECT id, file_name, height, width FROM images '
                              'ORDER BY id')
    objects = self._db.execute(
        'SELECT o.image_id, o.label, a.category_id, a.is_crowd, a.area, a.id, o.x1, '
        'o.y1, o.x2, o.y2, a.segmentation FROM objects o CROSS JOIN anns a '
        'ON a.seq = o.seq ORDER BY o.image_id, o.seq')
    row = next(objects, None)
    for image_id, file_name, height, width in images:
      objs = []
      while row is not None and row[0] == image_id:
        objs.append(dict(bbox=np.array(row[6:10], np.float32), label=row[1],
                         category_id=row[2], is_crowd=bool(row[3]), area=row[4],
                         id=row[5], segmentation=row[10]))
        row = next(objects, None)
      if objs or not self._skip_empty:
        yield dict(id=image_id, file_name=file_name, height=height, width=width,
                   objects=objs)

  def empty_file_names(self) -> list[str]:
    """File names of the images without objects, in image-id order."""
    return [n for n, in self._db.execute(
        'SELECT file_name FROM images WHERE id NOT IN (SELECT image_id FROM objects) '
        'ORDER BY id')]

  def without_empty(self) -> 'ImageRecords':
    n, = self._db.execute('SELECT count(*) FROM images WHERE id IN '
                          '(SELECT image_id FROM objects)').fetchone()
    return ImageRecords(self._db, n, skip_empty=True)


def _remove_orphans(work_dir: Path) -> None:
  """Deletes the database files of scans whose process is gone (killed before
  the file was written: COCO train2017's would be ~0.5 GB)."""
  with os.scandir(work_dir) as entries:  # Path.glob lists the whole directory
    for entry in entries:
      name = entry.name
      if not (name.startswith('detx_annotations_') and name.endswith('.sqlite')):
        continue
      try:
        os.kill(int(name.split('_')[2]), 0)
      except ValueError:
        continue  # not ours
      except ProcessLookupError:
        Path(entry.path).unlink(missing_ok=True)
      except PermissionError:
        pass  # alive, another user's


def _open_db(work_dir) -> tuple[sqlite3.Connection, str]:
  """A new sqlite database file in `work_dir` (default: the temp dir), which
  scan_annotations deletes once it is written: reading needs only the open file
  (sqlite refuses writes to an unlinked file, not reads). Its name carries the
  process id, so a later scan removes it if this process dies first."""
  work_dir = Path(work_dir or tempfile.gettempdir())
  _remove_orphans(work_dir)
  fd, name = tempfile.mkstemp(prefix=f'detx_annotations_{os.getpid()}_',
                              suffix='.sqlite', dir=work_dir)
  os.close(fd)
  db = sqlite3.connect(name, check_same_thread=False)
  for pragma in ('journal_mode=OFF', 'synchronous=OFF', 'temp_store=FILE',
                 'cache_size=-8192'):  # KiB: the page cache's bound
    db.execute(f'PRAGMA {pragma}')
  db.executescript(_SCHEMA)
  return db, name


class _Scan:
  """Checks the items of a COCO json as iter_arrays streams them: images and
  annotations go to the database, the first invalid entry of each array is kept
  to raise in json.load order once the whole file was read."""

  def __init__(self, where: str, db):
    self.where, self.db = where, db
    self.fatal = {}
    self.categories, self.errors, self.lists = [], [], set()
    self.num_images = self.num_annotations = 0

  def image(self, im):
    if 'images' in self.fatal:
      return
    try:
      rec = (int(im['id']), str(im['file_name']), int(im['height']), int(im['width']))
      self.db.execute('INSERT INTO images VALUES (?, ?, ?, ?)', rec)
    except sqlite3.IntegrityError:
      self.fatal['images'] = f'{self.where}: duplicate image id {rec[0]}'
      return
    except (KeyError, TypeError, ValueError, OverflowError) as e:
      self.fatal['images'] = f'{self.where}: invalid image entry {im!r:.200} ({e!r})'
      return
    self.num_images += 1
    if rec[2] <= 0 or rec[3] <= 0:
      self.errors.append(('bad_image_size', f'{self.where}: image id {rec[0]} '
                          f'({rec[1]}) has size {rec[3]}x{rec[2]}'))

  def annotation(self, seq, a):
    if 'annotations' in self.fatal:
      return
    try:
      aid, image_id, cat = int(a['id']), int(a['image_id']), int(a['category_id'])
      bbox = [float(v) for v in a['bbox']]
      problem, area, seg = None, None, None
      if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        problem = f'has an invalid bbox {bbox}'
      elif bbox[2] <= 0 or bbox[3] <= 0:
        problem = f'has a non-positive width/height: bbox {bbox}'
      else:
        area = float(a.get('area', bbox[2] * bbox[3]))
        seg = _compact_json(a.get('segmentation', []))
      xywh = bbox if problem is None else [None] * 4
      self.db.execute('INSERT INTO anns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                      (seq, aid, image_id, cat, *xywh, problem, area,
                       int(bool(a.get('iscrowd', 0))), seg))
    except sqlite3.IntegrityError:
      self.fatal['annotations'] = f'{self.where}: duplicate annotation id {aid}'
    except (KeyError, TypeError, ValueError, OverflowError) as e:
      self.fatal['annotations'] = (f'{self.where}: invalid annotation {a!r:.200} '
                                   f'({e!r})')

  def read(self, path):
    for key, i, item in iter_arrays(path, found=self.lists):
      if key == 'images':
        self.image(item)
      elif key == 'annotations':
        self.num_annotations += 1
        self.annotation(i, item)
      else:
        self.categories.append(item)

  def check(self) -> list[tuple[int, str]]:
    """Raises the json.load order's first invalid entry; the sorted categories."""
    for key in ('images', 'annotations', 'categories'):
      if key not in self.lists:
        raise DataError(f'{self.where}: missing or invalid "{key}" list')
    try:
      cats = sorted((int(c['id']), str(c['name'])) for c in self.categories)
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f'{self.where}: invalid category entry ({e!r})') from None
    if len({c for c, _ in cats}) != len(cats):
      raise DataError(f'{self.where}: duplicate category ids')
    for key in ('images', 'annotations'):
      if key in self.fatal:
        raise DataError(self.fatal[key])
    return cats

  def _reject(self, dropped, aid, kind, message):
    """Lists `aid` in `dropped` (a report list, under bad_boxes='drop'), else
    records the error."""
    if dropped is False:
      self.errors.append((kind, f"{message}. Fix the annotation or set "
                          "data.bad_boxes='drop'"))
    else:
      dropped.append(aid)

  def objects(self, cat_index, drop: bool, report):
    """Checks every annotation against its image and category (in file order) and
    writes the kept ones' boxes."""
    rows = self.db.execute(
        'SELECT a.seq, a.id, a.image_id, a.category_id, a.x, a.y, a.w, a.h, '
        'a.problem, i.id, i.file_name, i.width, i.height FROM anns a LEFT JOIN '
        'images i ON i.id = a.image_id ORDER BY a.seq').fetchmany
    while batch := rows(BATCH):
      kept = []
      for seq, aid, image_id, cat, x, y, w, h, problem, found, name, width, height in batch:
        if found is None:
          self.errors.append(('unknown_image', f'{self.where}: annotation id {aid} '
                              f'refers to unknown image id {image_id}'))
          continue
        what = f'{self.where}: annotation id {aid} (image {name})'
        if cat not in cat_index:
          self._reject(drop and report['dropped_unknown_category'], aid,
                       'unknown_category', f'{what} has unknown category id {cat}')
          continue
        if problem is None:
          box = convert_box((x, y, w, h), width, height)
          if box[2] < box[0] or box[3] < box[1]:
            problem = f'lies outside the {width}x{height} image: bbox {[x, y, w, h]}'
        if problem is not None:
          self._reject(drop and report['dropped_boxes'], aid, 'bad_box',
                       f'{what} {problem}')
          continue
        if x < 0 or y < 0 or x + w > width or y + h > height:
          report['clipped_boxes'].append(aid)
        kept.append((image_id, seq, cat_index[cat], *box))
      self.db.executemany('INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?)', kept)


def scan_annotations(ann_file, bad_boxes: str = 'error', work_dir=None
                     ) -> dict[str, Any]:
  """Reads and checks a COCO json (no image access), collecting the
  per-annotation problems instead of raising on them. The json is streamed
  (detx/data/coco_stream.py) and the records grouped per image in a temporary
  sqlite database under `work_dir` (default: the temp dir; the file is deleted
  once written): memory does not grow with the file.

  Returns dict(categories=[(id, name)...] sorted by id,
               images=ImageRecords: dict(id, file_name, height, width,
               objects=[...]) in image-id order, report=new_report() with the
               annotation items filled in, errors=[(kind, message)] that
               `bad_boxes` does not drop, num_annotations: the json's count).
  Raises DataError for a malformed file, invalid entries and duplicate ids.
  """
  ann_file = Path(ann_file)
  check_options(bad_boxes=bad_boxes)
  db, db_file = _open_db(work_dir)
  try:
    scan = _Scan(f'annotation file {ann_file}', db)
    scan.read(ann_file)
    cats = scan.check()
    report = new_report()
    scan.objects({cid: i for i, (cid, _) in enumerate(cats)}, bad_boxes == 'drop',
                 report)
    db.commit()
  except BaseException:
    db.close()
    raise
  finally:
    os.unlink(db_file)
  return dict(categories=cats, images=ImageRecords(db, scan.num_images),
              report=report, errors=scan.errors,
              num_annotations=scan.num_annotations)

def parse_annotations(ann_file, bad_boxes: str = 'error', work_dir=None
                      ) -> dict[str, Any]:
  """Reads and validates a COCO json (no image access), in memory that does
  not grow with the file (scan_annotations).

  Returns dict(categories=[(id, name)...] sorted by id,
               images=ImageRecords: dict(id, file_name, height, width,
               objects=[...]) by image id, report=the annotation items of the
               report). Raises DataError naming the first problem (and how
               many more there are).
  """
  parsed = scan_annotations(ann_file, bad_boxes, work_dir)
  _raise_first(parsed['errors'])
  return dict(categories=parsed['categories'], images=parsed['images'],
              report=parsed['report'])


def filter_empty(images, empty_images: str, report):
  """Lists images without objects in the report; drops them under 'drop'.
  `images`: a list of records (returns a list) or ImageRecords (returns
  ImageRecords, nothing read into memory)."""
  check_options(empty_images=empty_images)
  if isinstance(images, ImageRecords):
    drop = empty_images == 'drop'
    report['dropped_empty_images' if drop else 'empty_images'].extend(
        images.empty_file_names())
    return images.without_empty() if drop else images
  out = []
  for im in images:
    if not im['objects']:
      if empty_images == 'drop':
        report['dropped_empty_images'].append(im['file_name'])
        continue
      report['empty_images'].append(im['file_name'])
    out.append(im)
  return out
