"""Instance-mask helpers for the Mask R-CNN data pipeline (numpy + pycocotools).

A COCO segmentation is either a list of polygons ``[[x0, y0, x1, y1, ...],
...]`` (continuous pixel coordinates: pixel column ``c`` covers ``[c, c+1)``),
an uncompressed RLE ``{'size': [h, w], 'counts': [int, ...]}`` or a compressed
RLE ``{'size': [h, w], 'counts': str}``; the tfds records keep it as its raw
JSON text (detx/data/coco.py).

Mask R-CNN's training targets are made from the polygons themselves
(detx/data/transforms/rcnn.py carries them, detx/ops/masks.py rasterises
them in each RoI as Paddle's generate_mask_labels does); this module parses,
decodes and flips segmentations (:func:`flip_segmentation` is Paddle's
RandomFlipImage.flip_segms on one instance).
"""
from __future__ import annotations

import json
import warnings
from typing import Any

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
