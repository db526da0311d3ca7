"""A tensorflow-datasets builder for any COCO-format directory.

Layout read (``DIR`` is ``config.data.dir``, ``SPLIT`` e.g. ``train`` / ``val``)::

    DIR/annotations/instances_{SPLIT}2017.json
    DIR/{SPLIT}2017/<file_name>.jpg

The split is prepared once into ``array_record`` files under a cache directory
(the source directory may be read-only) and read back with
``builder.as_data_source()``, which needs no TensorFlow: images are stored as
the original encoded bytes and decoded here with OpenCV.

One builder config per (source directory, split): its name carries a hash of
the absolute path, the annotation file's size and mtime and the options, so two
directories (or an edited annotation file) never share prepared data, and
preparing ``val`` never requires preparing ``train``.

Stored per image (records are in ascending image-id order):
  image      the encoded file bytes (decoded by :func:`decode_image`)
  image_id   int64;  height, width: int32 (from the json);  file_name: text
  objects    sequence of
    bbox        float32 [4] absolute legacy pixel xyxy: x2 = x1 + w - 1,
                clipped to [0, W-1] / [0, H-1] (Paddle's coco_loader)
    label       int64 contiguous class id 0..C-1 (sorted category-id order)
    category_id int64 original COCO category id
    is_crowd    bool;  area: float32;  id: int64 annotation id
    segmentation  text: the raw json of the polygons or RLE
Dataset metadata (``builder.info.metadata``): ``category_ids``,
``category_names``, ``image_ids``, ``annotation_file``, ``source_dir``.

Dataset metadata also holds ``report``: what preparing found and did, one
list per item (file names for images, annotation ids for boxes; see
REPORT_KEYS). ``python -m detx.data.check`` prints the same report without
preparing anything.

Bad data: every record is checked while preparing; a defect either raises one
:class:`DataError` naming the file / annotation id, or is converted or dropped
and counted in the report, per these options (``config.data.*``):

  * images that are PNG (or another non-JPEG format), grayscale, CMYK JPEG,
    16-bit (scaled to 8 bits, round(v / 257)), with an alpha channel (dropped,
    not composited) or palette are *converted*: :func:`decode_image` turns
    them into uint8 RGB (OpenCV ``IMREAD_UNCHANGED`` for non-JPEG files);
  * ``exif``: ``'ignore'`` (default): COCO annotations refer to the stored
    pixels, so the EXIF orientation tag is ignored (images carrying one are
    listed in ``exif_ignored``); ``'apply'``: images whose tag is not 1 are
    rotated / flipped to their displayed orientation (stored re-encoded as
    PNG) and their boxes, polygons and RLEs are transformed with them
    (``height`` / ``width`` swap for 90-degree orientations); the json must
    still describe the stored pixels (its width / height are checked against
    the stored size). COCO evaluation scores detections against the json,
    i.e. in the stored frame, so 'apply' is meant for training splits; to
    evaluate such images, re-save them upright and fix the json instead;
  * boxes partly outside the image are clipped (Paddle's coco_loader) and
    listed in ``clipped_boxes``;
  * ``bad_boxes``: ``'error'`` (default) | ``'drop'``: boxes with zero /
    negative / non-finite size, boxes wholly outside the image, and
    annotations with an unknown category id (``dropped_boxes``,
    ``dropped_unknown_category``);
  * ``empty_images``: ``'keep'`` (default) | ``'drop'`` images with no
    annotations (after dropping); :func:`detx.data.loader.build` applies
    'drop' to the train split only: evaluation always sees every image;
  * ``bad_images``: ``'error'`` (default) | ``'drop'`` missing / unreadable
    files and corrupt or truncated images (``dropped_missing_images``,
    ``dropped_corrupt_images``);
  * malformed JSON, unknown image ids, duplicate ids and a size in the json
    that differs from the file's always raise (naming the file and line /
    column, or the id).

tfds writes into a temporary directory and renames it only on success, so a
failed prepare leaves nothing a later run would pick up.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils
from PIL import Image as PILImage

VERSION = '1.1.0'
DEFAULT_CACHE_DIR = '~/.cache/detx/tfds'
BAD_BOXES = ('error', 'drop')
EXIF = ('ignore', 'apply')
BAD_IMAGES = ('error', 'drop')
EMPTY_IMAGES = ('keep', 'drop')
# config.data key -> allowed values (the first is the default).
OPTIONS = {'bad_boxes': BAD_BOXES, 'exif': EXIF, 'bad_images': BAD_IMAGES,
           'empty_images': EMPTY_IMAGES}
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}

# The report stored in the metadata: key -> what it lists.
REPORT_KEYS = {
    'converted_png': 'images stored as PNG (decoded to RGB)',
    'converted_format': 'images in another non-JPEG format (decoded to RGB)',
    'converted_grayscale': 'grayscale images (converted to RGB)',
    'converted_cmyk': 'CMYK JPEGs (converted to RGB)',
    'converted_16bit': '16-bit images (scaled to 8 bits)',
    'converted_alpha': 'images with an alpha channel (alpha dropped)',
    'converted_palette': 'palette images (converted to RGB)',
    'exif_rotated': 'images rotated to their EXIF orientation, boxes too '
                    "(data.exif='apply')",
    'exif_ignored': 'images with an EXIF orientation, ignored: annotations '
                    "refer to the stored pixels (data.exif='ignore')",
    'clipped_boxes': 'boxes partly outside the image (clipped)',
    'dropped_boxes': "zero / negative / non-finite size boxes or boxes "
                     "outside the image (dropped: data.bad_boxes='drop')",
    'dropped_unknown_category': "annotations with an unknown category id "
                                "(dropped: data.bad_boxes='drop')",
    'empty_images': 'images with no annotations (kept)',
    'dropped_empty_images': "images with no annotations (dropped: "
                            "data.empty_images='drop')",
    'dropped_missing_images': "missing / unreadable image files (dropped: "
                              "data.bad_images='drop')",
    'dropped_corrupt_images': "corrupt or truncated images (dropped: "
                              "data.bad_images='drop')",
}
# Report keys whose entries are annotation ids (the others: file names).
ANNOTATION_KEYS = ('clipped_boxes', 'dropped_boxes', 'dropped_unknown_category')
CHECK_HINT = 'python -m detx.data.check --config=... lists every defect'


class DataError(ValueError):
  """A dataset on disk is missing, malformed or inconsistent."""


def check_options(**options) -> dict[str, str]:
  """Validates bad-data options (OPTIONS keys); returns all of them, with
  defaults filled in. Raises ValueError naming the config key."""
  out = dict(DEFAULTS)
  for key, value in options.items():
    if key not in OPTIONS:
      raise TypeError(f'unknown data option {key!r}')
    if value not in OPTIONS[key]:
      raise ValueError(f'data.{key} must be one of {OPTIONS[key]}, '
                       f'got {value!r}')
    out[key] = value
  return out


def new_report() -> dict[str, list]:
  return {k: [] for k in REPORT_KEYS}


def report_counts(report) -> dict[str, int]:
  """{key: count} of the non-empty report items."""
  return {k: len(v) for k, v in report.items() if len(v)}


def summarize(report, limit: int = 3) -> str:
  """One line per non-empty report item: count, key, first few entries."""
  lines = []
  for key, items in report.items():
    items = list(items)
    if not items:
      continue
    first = ', '.join(str(i) for i in items[:limit])
    more = f', ... (+{len(items) - limit})' if len(items) > limit else ''
    lines.append(f'{len(items)} {key}: {first}{more}')
  return '\n'.join(lines)


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


# ---------------------------------------------------------------------------
# Images.

_JPEG_MAGIC = b'\xff\xd8'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'F', 'I;16', 'I;16L', 'I;16B',
               'I;16N')
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
_EXIF_ORIENTATION = 0x0112


def _to_uint8_rgb(im: np.ndarray, name: str) -> np.ndarray:
  """An OpenCV IMREAD_UNCHANGED array (gray / BGR / BGRA, any depth) ->
  uint8 RGB [H, W, 3]; alpha is dropped, 16 bits scaled round(v / 257)."""
  if im.dtype == np.uint16:
    im = ((im.astype(np.uint32) + 128) // 257).astype(np.uint8)
  elif im.dtype in (np.float32, np.float64):
    im = np.clip(np.rint(np.nan_to_num(im) * 255.0), 0, 255).astype(np.uint8)
  elif im.dtype != np.uint8:
    raise DataError(f'cannot decode image {name}: unsupported pixel type '
                    f'{im.dtype}')
  if im.ndim == 2:
    im = im[:, :, None]
  if im.ndim != 3 or im.shape[2] not in (1, 2, 3, 4):
    raise DataError(f'cannot decode image {name}: unsupported shape '
                    f'{im.shape}')
  if im.shape[2] <= 2:  # gray (+ alpha)
    return np.ascontiguousarray(np.repeat(im[:, :, :1], 3, axis=2))
  return cv2.cvtColor(np.ascontiguousarray(im[:, :, :3]), cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """Encoded image bytes -> uint8 RGB [H, W, 3] (EXIF orientation ignored,
  as COCO's annotations are in the stored pixel orientation).

  JPEGs (RGB, grayscale, CMYK) go through OpenCV's IMREAD_COLOR; other
  formats are read IMREAD_UNCHANGED and converted: grayscale replicated,
  alpha dropped, 16 bits scaled to 8 (round(v / 257)); PIL is the fallback
  for formats OpenCV cannot read."""
  data = bytes(data)
  buf = np.frombuffer(data, np.uint8)
  if data[:2] == _JPEG_MAGIC:
    im = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if im is None:
      raise DataError(f'cannot decode image {name}')
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
  im = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if len(buf) else None
  if im is not None:
    return _to_uint8_rgb(im, name)
  try:
    with PILImage.open(io.BytesIO(data)) as pil:
      return np.asarray(pil.convert('RGB')).copy()
  except Exception:  # PIL raises OSError, SyntaxError, ValueError...
    raise DataError(f'cannot decode image {name}') from None


def inspect_image(data: bytes, path, verify: bool = True) -> dict[str, Any]:
  """Reads an image's header (and, with `verify`, decodes it fully: at 1/8
  scale for JPEG, still every byte) without converting it.

  Returns dict(format, mode, height, width (stored pixels), orientation (EXIF
  tag, 1 when absent), notes: the REPORT_KEYS ``converted_*`` items that
  apply). Raises DataError naming `path` when it is not a readable image.
  """
  try:
    with PILImage.open(io.BytesIO(data)) as im:
      fmt, mode = im.format, im.mode
      w, h = im.size
      transparency = 'transparency' in im.info
      try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
      except Exception:  # a malformed EXIF block: no usable orientation
        orientation = 1
      if verify:
        if fmt == 'JPEG':
          im.draft('RGB', (max(1, w // 8), max(1, h // 8)))
        im.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
    raise DataError(f'corrupt or truncated image {path}: {e}') from None
  if orientation not in range(1, 9):
    orientation = 1
  bits16 = mode in ('I', 'F') or mode.startswith('I;16')
  if fmt == 'PNG' and data[:8] == _PNG_MAGIC and len(data) > 25:
    bits16 = bits16 or data[24] == 16  # IHDR bit depth (PIL reads 16-bit
    # RGB as 8-bit 'RGB')
  notes = []
  if fmt == 'PNG':
    notes.append('converted_png')
  elif fmt != 'JPEG':
    notes.append('converted_format')
  if mode in _GRAY_MODES:
    notes.append('converted_grayscale')
  if mode == 'CMYK':
    notes.append('converted_cmyk')
  if bits16:
    notes.append('converted_16bit')
  if mode in _ALPHA_MODES or transparency:
    notes.append('converted_alpha')
  if mode in ('P', 'PA'):
    notes.append('converted_palette')
  return dict(format=fmt, mode=mode, height=h, width=w,
              orientation=orientation, notes=notes)


def verify_image(data: bytes, path) -> tuple[int, int]:
  """Fully decodes (at 1/8 scale for JPEG: fast, still reads every byte) and
  returns (height, width); raises DataError naming `path` if corrupt/truncated."""
  info = inspect_image(data, path, verify=True)
  return info['height'], info['width']


def oriented_size(orientation: int, height: int, width: int
                  ) -> tuple[int, int]:
  """(height, width) after applying EXIF `orientation`."""
  return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def orient_array(im: np.ndarray, orientation: int) -> np.ndarray:
  """Stored pixels [H, W, ...] -> displayed pixels for EXIF `orientation`
  (as PIL's ImageOps.exif_transpose)."""
  ops = {
      1: lambda a: a,
      2: lambda a: a[:, ::-1],
      3: lambda a: a[::-1, ::-1],
      4: lambda a: a[::-1],
      5: lambda a: np.swapaxes(a, 0, 1),
      6: lambda a: np.rot90(a, -1),
      7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
      8: lambda a: np.rot90(a, 1),
  }
  return np.ascontiguousarray(ops[int(orientation)](im))


def orient_points(xy, orientation: int, height: int, width: int,
                  legacy: bool = False) -> np.ndarray:
  """Points [N, 2] (x, y) in the stored W x H image -> the displayed image.
  `legacy`: pixel-index coordinates (x in 0..W-1, legacy boxes); else
  continuous ones (x in [0, W], polygons)."""
  xy = np.asarray(xy, np.float64).reshape(-1, 2)
  x, y = xy[:, 0], xy[:, 1]
  wm, hm = (width - 1.0, height - 1.0) if legacy else (float(width),
                                                       float(height))
  out = {
      1: (x, y), 2: (wm - x, y), 3: (wm - x, hm - y), 4: (x, hm - y),
      5: (y, x), 6: (hm - y, x), 7: (hm - y, wm - x), 8: (y, wm - x),
  }[int(orientation)]
  return np.stack(out, 1)


def orient_box(box, orientation: int, height: int, width: int) -> np.ndarray:
  """A legacy pixel xyxy box in the stored image -> the displayed image."""
  b = np.asarray(box, np.float64)
  pts = orient_points([[b[0], b[1]], [b[2], b[3]]], orientation, height,
                      width, legacy=True)
  return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)


def orient_segmentation(seg, orientation: int, height: int, width: int):
  """A COCO segmentation (polygons or RLE, parsed) -> the displayed image."""
  if int(orientation) == 1 or not seg:
    return seg
  if isinstance(seg, (list, tuple)):
    out = []
    for poly in seg:
      pts = orient_points(np.asarray(poly, np.float64).reshape(-1, 2),
                          orientation, height, width)
      out.append([float(v) for v in pts.reshape(-1)])
    return out
  from pycocotools import mask as mask_util
  rle = seg
  if isinstance(seg.get('counts'), list):
    rle = mask_util.frPyObjects(seg, *seg['size'])
  m = orient_array(mask_util.decode(rle), orientation)
  enc = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
  counts = enc['counts']
  return {'size': [int(v) for v in enc['size']],
          'counts': counts.decode() if isinstance(counts, bytes) else counts}


def apply_orientation(data: bytes, record: dict, orientation: int,
                      name: str = '<bytes>') -> tuple[bytes, dict]:
  """(encoded image, parsed image record) in the stored frame -> the same
  rotated / flipped to EXIF `orientation`: PNG bytes without EXIF, and a
  record copy with height / width and every object's bbox and segmentation
  transformed."""
  h, w = record['height'], record['width']
  rgb = orient_array(decode_image(data, name), orientation)
  ok, enc = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  if not ok:
    raise DataError(f'cannot re-encode image {name}')
  rec = dict(record)
  rec['height'], rec['width'] = oriented_size(orientation, h, w)
  objects = []
  for o in record['objects']:
    o = dict(o)
    o['bbox'] = orient_box(o['bbox'], orientation, h, w)
    seg = orient_segmentation(json.loads(o['segmentation']), orientation, h,
                              w)
    o['segmentation'] = json.dumps(seg, separators=(',', ':'))
    objects.append(o)
  rec['objects'] = objects
  return enc.tobytes(), rec


def convert_box(bbox, width: int, height: int) -> list[float]:
  """COCO [x, y, w, h] -> legacy pixel [x1, y1, x2, y2] (Paddle coco_loader)."""
  x, y, w, h = (float(v) for v in bbox)
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  return [x1, y1, x2, y2]


# ---------------------------------------------------------------------------
# Annotations.

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


def iter_images(images, img_dir, *, exif: str = 'ignore',
                bad_images: str = 'error', report, errors=None,
                verify: bool = True):
  """Reads and checks each image record's file; yields (record, bytes,
  inspect_image info) for the usable ones and fills `report` (conversions,
  EXIF, images dropped under bad_images='drop').

  A problem that is not dropped raises DataError naming the file, or, with
  an `errors` list, is appended to it as (kind, message) and the image is
  skipped (the check command's mode)."""
  check_options(exif=exif, bad_images=bad_images)
  img_dir = Path(img_dir)

  def problem(kind, im, message):
    if kind in ('missing', 'corrupt') and bad_images == 'drop':
      report[f'dropped_{kind}_images'].append(im['file_name'])
      return
    if kind in ('missing', 'corrupt'):
      message += (" (fix or remove it, or set data.bad_images='drop' to skip "
                  'such images)')
    if errors is None:
      raise DataError(message)
    errors.append((f'{kind}_image', message))

  for im in images:
    path = img_dir / im['file_name']
    try:
      data = path.read_bytes()
    except OSError as e:
      problem('missing', im, f'image file {path} (image id {im["id"]}) is '
              f'missing or unreadable: {e.strerror}')
      continue
    try:
      info = inspect_image(data, path, verify=verify)
    except DataError as e:
      problem('corrupt', im, str(e))
      continue
    h, w, orientation = info['height'], info['width'], info['orientation']
    if (h, w) != (im['height'], im['width']):
      hint = ''
      if oriented_size(orientation, h, w) == (im['height'], im['width']):
        hint = (f' (its EXIF orientation {orientation} displays it as '
                f'{im["width"]}x{im["height"]}: the json was written for the '
                'displayed image; re-save the image upright)')
      problem('size', im, f'image file {path} is {w}x{h} but its annotation '
              f'says {im["width"]}x{im["height"]}{hint}')
      continue
    for note in info['notes']:
      report[note].append(im['file_name'])
    if orientation != 1:
      report['exif_rotated' if exif == 'apply' else 'exif_ignored'].append(
          im['file_name'])
    yield im, data, info


def _fingerprint(source_dir: Path, split: str, bad_boxes: str,
                 options: dict | None = None) -> str:
  ann, _ = layout(source_dir, split)
  st = ann.stat()
  options = check_options(bad_boxes=bad_boxes, **(options or {}))
  key = json.dumps([VERSION, str(source_dir), split, st.st_size,
                    st.st_mtime_ns, sorted(options.items())])
  return hashlib.sha1(key.encode()).hexdigest()[:16]


class CocoConfig(tfds.core.BuilderConfig):
  """One COCO-format source directory and split."""

  def __init__(self, *, source_dir: str, split: str, bad_boxes: str = 'error',
               exif: str = 'ignore', bad_images: str = 'error',
               empty_images: str = 'keep', **kwargs):
    super().__init__(**kwargs)
    self.source_dir = source_dir
    self.split = split
    self.bad_boxes = bad_boxes
    self.exif = exif
    self.bad_images = bad_images
    self.empty_images = empty_images


class DetxCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """COCO-format directory -> array_record (see module docstring)."""

  RELEASE_NOTES = {
      '1.0.0': 'First version.',
      VERSION: 'Bad-data options (exif, bad_images, empty_images), images '
               'converted to RGB, a report in the metadata.',
  }
  VERSION = tfds.core.Version(VERSION)
  # Configs are created per source directory by `make_builder`.
  BUILDER_CONFIGS = []

  # tfds' default probes `importlib_resources` (not installed on Python>=3.9)
  # for builders that live in a package; the path is this file.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='A COCO-format detection dataset (detx).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3),
                                         encoding_format='jpeg'),
            'image_id': np.int64,
            'height': np.int32,
            'width': np.int32,
            'file_name': tfds.features.Text(),
            'objects': tfds.features.Sequence({
                'bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
                'label': np.int64,
                'category_id': np.int64,
                'is_crowd': np.bool_,
                'area': np.float32,
                'id': np.int64,
                'segmentation': tfds.features.Text(),
            }),
        }),
        metadata=tfds.core.MetadataDict(),
        # Keep records in generation (= ascending image id) order.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    ann, img_dir = check_layout(cfg.source_dir, cfg.split)
    parsed = parse_annotations(ann, cfg.bad_boxes)
    report = parsed['report']
    images = filter_empty(parsed['images'], cfg.empty_images, report)
    md = self.info.metadata
    md['category_ids'] = [c for c, _ in parsed['categories']]
    md['category_names'] = [n for _, n in parsed['categories']]
    md['image_ids'] = [im['id'] for im in images]  # final: after generation
    md['annotation_file'] = str(ann)
    md['source_dir'] = str(cfg.source_dir)
    md['report'] = report
    return {cfg.split: self._generate_examples(images, img_dir, report)}

  def _generate_examples(self, images, img_dir: Path, report):
    cfg = self.builder_config
    kept = []
    for im, data, info in iter_images(images, img_dir, exif=cfg.exif,
                                      bad_images=cfg.bad_images,
                                      report=report):
      if cfg.exif == 'apply' and info['orientation'] != 1:
        data, im = apply_orientation(data, im, info['orientation'],
                                     str(img_dir / im['file_name']))
      kept.append(im['id'])
      objs = im['objects']
      yield im['id'], {
          'image': data,
          'image_id': im['id'],
          'height': im['height'],
          'width': im['width'],
          'file_name': im['file_name'],
          'objects': {
              'bbox': np.stack([o['bbox'] for o in objs]).astype(np.float32)
                      if objs else np.zeros((0, 4), np.float32),
              'label': np.array([o['label'] for o in objs], np.int64),
              'category_id': np.array([o['category_id'] for o in objs],
                                      np.int64),
              'is_crowd': np.array([o['is_crowd'] for o in objs], np.bool_),
              'area': np.array([o['area'] for o in objs], np.float32),
              'id': np.array([o['id'] for o in objs], np.int64),
              'segmentation': [o['segmentation'] for o in objs],
          },
      }
    # tfds writes the metadata after the last example.
    md = self.info.metadata
    md['image_ids'] = kept
    md['report'] = report
    if images and not kept:
      raise DataError(f'no usable images left in {img_dir} '
                      f'({summarize(report)})')


def cache_root(cache_dir: str = '') -> Path:
  return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()


def make_builder(source_dir, split: str, cache_dir: str = '',
                 bad_boxes: str = 'error', *, exif: str = 'ignore',
                 bad_images: str = 'error', empty_images: str = 'keep'
                 ) -> DetxCoco:
  """The builder for `source_dir`'s `split` (validates the layout)."""
  source_dir = Path(source_dir).expanduser().resolve()
  check_layout(source_dir, split)
  options = dict(exif=exif, bad_images=bad_images, empty_images=empty_images)
  check_options(bad_boxes=bad_boxes, **options)
  name = f'{split}_{_fingerprint(source_dir, split, bad_boxes, options)}'
  config = CocoConfig(name=name, version=VERSION, source_dir=str(source_dir),
                      split=split, bad_boxes=bad_boxes, **options,
                      description=f'{source_dir} {split}')
  with _quiet():  # tfds warns about every custom (per-directory) config
    return DetxCoco(config=config, data_dir=str(cache_root(cache_dir)),
                    file_format='array_record')


@contextlib.contextmanager
def _quiet(progress: bool = False):
  """Mutes tfds' absl warnings (and progress bars unless `progress`)."""
  level = absl_logging.get_verbosity()
  bars = getattr(tqdm_utils, '_active', True)
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.display_progress_bar(progress)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)
    tfds.display_progress_bar(bars)


@contextlib.contextmanager
def _lock(path: Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(source_dir, split: str, cache_dir: str = '',
            bad_boxes: str = 'error', *, exif: str = 'ignore',
            bad_images: str = 'error', empty_images: str = 'keep'
            ) -> DetxCoco:
  """Returns a prepared builder, preparing it first if needed (process-safe:
  concurrent callers wait on a file lock). The options are the bad-data
  switches of the module docstring; what they did is
  ``builder.info.metadata['report']``."""
  options = dict(exif=exif, bad_images=bad_images, empty_images=empty_images)
  builder = make_builder(source_dir, split, cache_dir, bad_boxes, **options)
  with _quiet():
    done = builder.is_prepared()
  if done:
    return builder
  with _lock(Path(builder.data_dir).parent / '.prepare.lock'):
    builder = make_builder(source_dir, split, cache_dir, bad_boxes, **options)
    with _quiet(progress=sys.stderr.isatty()):
      if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return make_builder(source_dir, split, cache_dir, bad_boxes, **options)


def data_source(builder: DetxCoco):
  """Random-access source of the builder's split; images left encoded."""
  return builder.as_data_source(
      builder.builder_config.split,
      decoders={'image': tfds.decode.SkipDecoding()})


def to_example(record: dict) -> dict[str, Any]:
  """A data-source record -> the raw example dict used by transforms."""
  objs = record['objects']
  name = record['file_name']
  if isinstance(name, bytes):
    name = name.decode()
  segs = [s.decode() if isinstance(s, bytes) else str(s)
          for s in objs['segmentation']]
  return {
      'image': decode_image(record['image'], name),
      'image_id': np.int64(record['image_id']),
      'height': int(record['height']),
      'width': int(record['width']),
      'file_name': name,
      'boxes': np.asarray(objs['bbox'], np.float32).reshape(-1, 4),
      'labels': np.asarray(objs['label'], np.int32).reshape(-1),
      'category_ids': np.asarray(objs['category_id'], np.int64).reshape(-1),
      'is_crowd': np.asarray(objs['is_crowd'], bool).reshape(-1),
      'area': np.asarray(objs['area'], np.float32).reshape(-1),
      'ann_ids': np.asarray(objs['id'], np.int64).reshape(-1),
      'segmentation': segs,
  }
