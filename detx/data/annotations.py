"""COCO annotation files: the split layout, reading and checking the json
(:func:`scan_annotations` collects every problem, :func:`parse_annotations`
raises the first), COCO boxes -> Paddle's legacy pixel boxes, empty images.
No image is read here (detx/data/images.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from detx.data.bad_data import CHECK_HINT, DataError, check_options, new_report

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


def _load_json(path: Path) -> dict:
  try:
    with open(path, 'rb') as f:
      d = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f'malformed JSON in annotation file {path} at line '
                    f'{e.lineno}, column {e.colno}: {e.msg}') from None
  except UnicodeDecodeError as e:
    raise DataError(f'malformed JSON in annotation file {path}: not UTF-8 '
                    f'text (byte {e.start})') from None
  except OSError as e:
    raise DataError(f'cannot read annotation file {path}: {e}') from None
  if not isinstance(d, dict):
    raise DataError(f'annotation file {path}: expected a JSON object with '
                    '"images", "annotations" and "categories"')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(d.get(key), list):
      raise DataError(f'annotation file {path}: missing or invalid "{key}" '
                      'list')
  return d


def _raise_first(errors: list[tuple[str, str]]):
  if errors:
    more = (f' (and {len(errors) - 1} more problems: {CHECK_HINT})'
            if len(errors) > 1 else '')
    raise DataError(errors[0][1] + more)


def scan_annotations(ann_file, bad_boxes: str = 'error') -> dict[str, Any]:
  """Reads and checks a COCO json (no image access), collecting the
  per-annotation problems instead of raising on them.

  Returns dict(categories=[(id, name)...] sorted by id,
               images=[dict(id, file_name, height, width, objects=[...])]
               sorted by image id, report=new_report() with the annotation
               items filled in, errors=[(kind, message)] that `bad_boxes`
               does not drop, num_annotations: the json's count). Raises
  DataError for a malformed file, invalid entries and duplicate ids.
  """
  ann_file = Path(ann_file)
  check_options(bad_boxes=bad_boxes)
  d = _load_json(ann_file)
  where = f'annotation file {ann_file}'
  report = new_report()
  errors: list[tuple[str, str]] = []
  drop = bad_boxes == 'drop'
  try:
    cats = sorted((int(c['id']), str(c['name'])) for c in d['categories'])
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f'{where}: invalid category entry ({e!r})') from None
  if len({c for c, _ in cats}) != len(cats):
    raise DataError(f'{where}: duplicate category ids')
  cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
  images = {}
  for im in d['images']:
    try:
      rec = dict(id=int(im['id']), file_name=str(im['file_name']),
                 height=int(im['height']), width=int(im['width']), objects=[])
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f'{where}: invalid image entry {im!r:.200} ({e!r})'
                      ) from None
    if rec['id'] in images:
      raise DataError(f'{where}: duplicate image id {rec["id"]}')
    if rec['height'] <= 0 or rec['width'] <= 0:
      errors.append(('bad_image_size',
                     f'{where}: image id {rec["id"]} ({rec["file_name"]}) '
                     f'has size {rec["width"]}x{rec["height"]}'))
    images[rec['id']] = rec
  seen_ann = set()
  for a in d['annotations']:
    try:
      aid = int(a['id'])
      image_id = int(a['image_id'])
      cat = int(a['category_id'])
      bbox = [float(v) for v in a['bbox']]
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f'{where}: invalid annotation {a!r:.200} ({e!r})'
                      ) from None
    if aid in seen_ann:
      raise DataError(f'{where}: duplicate annotation id {aid}')
    seen_ann.add(aid)
    if image_id not in images:
      errors.append(('unknown_image',
                     f'{where}: annotation id {aid} refers to unknown image '
                     f'id {image_id}'))
      continue
    im = images[image_id]
    what = f'{where}: annotation id {aid} (image {im["file_name"]})'
    if cat not in cat_index:
      if drop:
        report['dropped_unknown_category'].append(aid)
      else:
        errors.append(('unknown_category',
                       f'{what} has unknown category id {cat}. Fix the '
                       "annotation or set data.bad_boxes='drop'"))
      continue
    problem = None
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
      problem = f'has an invalid bbox {bbox}'
    elif bbox[2] <= 0 or bbox[3] <= 0:
      problem = f'has a non-positive width/height: bbox {bbox}'
    if problem is None:
      box = convert_box(bbox, im['width'], im['height'])
      if box[2] < box[0] or box[3] < box[1]:
        problem = (f'lies outside the {im["width"]}x{im["height"]} image: '
                   f'bbox {bbox}')
    if problem is not None:
      if drop:
        report['dropped_boxes'].append(aid)
      else:
        errors.append(('bad_box', f'{what} {problem}. Fix the annotation or '
                       "set data.bad_boxes='drop'"))
      continue
    x, y, w, h = bbox
    if x < 0 or y < 0 or x + w > im['width'] or y + h > im['height']:
      report['clipped_boxes'].append(aid)
    seg = a.get('segmentation', [])
    im['objects'].append(dict(
        bbox=np.asarray(box, np.float32),
        label=cat_index[cat], category_id=cat,
        is_crowd=bool(a.get('iscrowd', 0)),
        area=float(a.get('area', w * h)), id=aid,
        segmentation=json.dumps(seg, separators=(',', ':'))))
  return dict(categories=cats, images=[images[k] for k in sorted(images)],
              report=report, errors=errors,
              num_annotations=len(d['annotations']))


def parse_annotations(ann_file, bad_boxes: str = 'error') -> dict[str, Any]:
  """Reads and validates a COCO json (no image access).

  Returns dict(categories=[(id, name)...] sorted by id,
               images=[dict(id, file_name, height, width, objects=[...])]
               sorted by image id, report=the annotation items of the
               report). Raises DataError naming the first problem (and how
               many more there are).
  """
  parsed = scan_annotations(ann_file, bad_boxes)
  _raise_first(parsed['errors'])
  return dict(categories=parsed['categories'], images=parsed['images'],
              report=parsed['report'])


def filter_empty(images: list[dict], empty_images: str, report) -> list[dict]:
  """Lists images without objects in the report; drops them under 'drop'."""
  check_options(empty_images=empty_images)
  out = []
  for im in images:
    if not im['objects']:
      if empty_images == 'drop':
        report['dropped_empty_images'].append(im['file_name'])
        continue
      report['empty_images'].append(im['file_name'])
    out.append(im)
  return out
