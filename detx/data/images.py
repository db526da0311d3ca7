"""Image files: decoding to uint8 RGB, header inspection (format, mode, EXIF
orientation, the conversions a file needs), EXIF orientation of pixels, boxes
and segmentations, and the checked read of a split's image files
(:func:`iter_images`). The switches and the report are in detx/data/bad_data.py.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage

from detx.data.bad_data import DataError, check_options

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
