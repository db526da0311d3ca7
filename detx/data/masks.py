"""Instance-mask helpers for the Mask R-CNN data pipeline (numpy + pycocotools).

A COCO segmentation is either a list of polygons ``[[x0, y0, x1, y1, ...],
...]`` (continuous pixel coordinates: pixel column ``c`` covers ``[c, c+1)``),
an uncompressed RLE ``{'size': [h, w], 'counts': [int, ...]}`` or a compressed
RLE ``{'size': [h, w], 'counts': str}``; the tfds records keep it as its raw
JSON text (detx/data/coco.py).

Ground-truth mask crops (``gt_masks`` in the R-CNN batch) are each instance's
mask rasterised *inside its own legacy box* ``[x1, y1, x2, y2]`` at ``M x M``.
The crop frame follows Detectron/Paddle's ``polys_to_mask_wrt_box`` (the
rasteriser behind ``generate_mask_labels``)::

    w = max(x2 - x1, 1),  h = max(y2 - y1, 1)          # no legacy +1 here
    crop pixel (i, j) covers  [y1 + i*h/M, y1 + (i+1)*h/M)
                            x [x1 + j*w/M, x1 + (j+1)*w/M)
    (its centre: y1 + (i + 0.5)*h/M, x1 + (j + 0.5)*w/M)

The frame is relative to the box, so a crop computed from the original
annotation is the crop of the resized one (box and polygon scale together),
and a horizontal flip (boxes ``x' = W - 1 - x``, polygons ``x' = W - 1 - x``,
Paddle's RandomFlipImage) mirrors the crop's columns: the pipeline computes
crops once and mirrors them (:func:`flip_segmentation` is the literal Paddle
flip, kept for tests and custom use).

Polygons are rasterised by pycocotools directly in the crop frame (exactly
Detectron's rasteriser); RLEs are decoded at full resolution and sampled
bilinearly at the crop pixel centres (threshold 0.5). An instance with no
usable segmentation (``[]``, or only degenerate polygons) gets a full box.
"""
from __future__ import annotations

import json
import warnings
from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_util


def parse(segmentation) -> Any:
  """Raw JSON text (or an already parsed object) -> list of polygons | RLE
  dict. '' / None -> []."""
  if segmentation is None:
    return []
  if isinstance(segmentation, bytes):
    segmentation = segmentation.decode()
  if isinstance(segmentation, str):
    segmentation = segmentation.strip()
    return json.loads(segmentation) if segmentation else []
  return segmentation


def is_polygon(segmentation) -> bool:
  return isinstance(segmentation, (list, tuple))


def _polygons(segmentation) -> list[list[float]]:
  """The usable polygons (>= 3 points, finite) as float lists."""
  out = []
  for p in segmentation:
    p = np.asarray(p, np.float64).reshape(-1)
    if len(p) >= 6 and len(p) % 2 == 0 and np.isfinite(p).all():
      out.append(p.tolist())
  return out


def to_rle(segmentation, height: int, width: int) -> dict:
  """Any COCO segmentation -> one compressed RLE of an `height` x `width`
  image (polygons merged)."""
  seg = parse(segmentation)
  if is_polygon(seg):
    polys = _polygons(seg)
    if not polys:
      return mask_util.encode(np.zeros((height, width), np.uint8, order='F'))
    return mask_util.merge(mask_util.frPyObjects(polys, height, width))
  if not isinstance(seg, dict) or 'counts' not in seg:
    raise ValueError(f'unrecognised segmentation {str(seg):.100}')
  if isinstance(seg['counts'], list):
    rle = mask_util.frPyObjects(seg, *seg['size'])
  else:
    rle = dict(seg)
    if isinstance(rle['counts'], str):
      rle['counts'] = rle['counts'].encode()
  return rle


def _decode_rle(rle: dict) -> np.ndarray:
  # pycocotools' Cython decode trips numpy 2's __array__(copy=...)
  # deprecation on every call; harmless, and not ours to fix.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    return mask_util.decode(rle)


def decode(segmentation, height: int, width: int) -> np.ndarray:
  """Any COCO segmentation -> uint8 {0, 1} mask [height, width]."""
  m = _decode_rle(to_rle(segmentation, height, width))
  if m.shape != (height, width):
    raise ValueError(f'RLE of size {m.shape} in an image of size '
                     f'{(height, width)}')
  return m


def area(segmentation, height: int, width: int) -> float:
  return float(mask_util.area(to_rle(segmentation, height, width)))


def flip_segmentation(segmentation, height: int, width: int):
  """Paddle RandomFlipImage.flip_segms on one instance: polygon
  x' = W - x - 1; an RLE is decoded, mirrored and re-encoded (compressed)."""
  seg = parse(segmentation)
  if is_polygon(seg):
    out = []
    for p in seg:
      p = np.array(p, np.float64)
      p[0::2] = width - p[0::2] - 1
      out.append(p.tolist())
    return out
  m = decode(seg, height, width)[:, ::-1]
  rle = mask_util.encode(np.asfortranarray(m))
  rle['counts'] = rle['counts'].decode()
  return rle


def box_frame(box: Sequence[float]) -> tuple[float, float, float, float]:
  """(x1, y1, w, h) of a legacy xyxy box's crop frame (see module doc)."""
  x1, y1, x2, y2 = (float(v) for v in box)
  return x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)


def polygons_to_crop(polygons, box, size: int) -> np.ndarray | None:
  """Detectron polys_to_mask_wrt_box: polygons rasterised in the box frame
  at size x size (uint8), or None when no polygon is usable."""
  polys = _polygons(polygons)
  if not polys:
    return None
  x1, y1, w, h = box_frame(box)
  scaled = []
  for p in polys:
    p = np.asarray(p, np.float64)
    p[0::2] = (p[0::2] - x1) * size / w
    p[1::2] = (p[1::2] - y1) * size / h
    scaled.append(p.tolist())
  rle = mask_util.merge(mask_util.frPyObjects(scaled, size, size))
  return _decode_rle(rle).astype(np.uint8)


def mask_to_crop(mask: np.ndarray, box, size: int) -> np.ndarray:
  """A full-image {0, 1} mask sampled bilinearly at the centres of the box
  frame's size x size pixels, thresholded at 0.5 (uint8)."""
  x1, y1, w, h = box_frame(box)
  sx, sy = w / size, h / size
  # cv2 pixel centres sit at integer coordinates: continuous x = c + 0.5.
  affine = np.array([[sx, 0, x1 + 0.5 * sx - 0.5],
                     [0, sy, y1 + 0.5 * sy - 0.5]], np.float64)
  out = cv2.warpAffine(mask.astype(np.float32), affine, (size, size),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return (out >= 0.5).astype(np.uint8)


def crop(segmentation, box, size: int, height: int, width: int
         ) -> np.ndarray:
  """One instance's size x size uint8 crop in its box frame (see module
  doc); a full box when the segmentation is empty."""
  seg = parse(segmentation)
  out = None
  if is_polygon(seg):
    out = polygons_to_crop(seg, box, size)
  elif seg:
    out = mask_to_crop(decode(seg, height, width), box, size)
  if out is None:
    out = np.ones((size, size), np.uint8)
  return out


def crop_masks(segmentations: Sequence, boxes: np.ndarray, size: int,
               height: int, width: int) -> np.ndarray:
  """uint8 [n, size, size] crops of n instances (legacy boxes [n, 4] in the
  same pixel frame as the segmentations: the original image)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if len(segmentations) != len(boxes):
    raise ValueError(f'{len(segmentations)} segmentations for '
                     f'{len(boxes)} boxes')
  out = np.zeros((len(boxes), size, size), np.uint8)
  for k, (seg, box) in enumerate(zip(segmentations, boxes)):
    out[k] = crop(seg, box, size, height, width)
  return out
