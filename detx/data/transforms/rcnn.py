"""The R-CNN / RetinaNet transforms (Paddle FasterRCNNTrainFeed /
MaskRCNNTrainFeed and the eval feeds, PADDLEDET_SPEC.md section 4):

  decode RGB -> flip (p=0.5; legacy boxes and polygon vertices
  x' = W - x - 1) -> normalise (/255, ImageNet mean/std, on the full-resolution
  HWC image, in Paddle's float order) -> resize (short side to
  `short_side`, long side capped at `long_side`, one common scale, cv2
  INTER_LINEAR with fx = fy = scale) -> zero-pad bottom/right into the
  batch's bucket.

Boxes come out in resized pixels (original * scale, legacy xyxy); Paddle
keeps them in original pixels and multiplies by im_info's scale inside
rpn_target_assign / generate_proposal_labels, which is the same numbers.
Mask R-CNN carries each instance's polygons (`gt_polys`, `gt_poly_ids`, see
`pack_polygons`) in original pixels, as Paddle's gt_segms; the device
rasterises them in each RoI (detx/ops/masks.py).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np
from absl import logging

from detx.data import masks as mask_lib
from detx.data.bad_data import DataError
from detx.data.transforms import augment_level, check_image_dtype, raw_targets

# Paddle's NormalizeImage holds mean/std as float64 arrays and normalises a
# float32 image in place: (x / 255) in float32, then -mean, /std in float64
# each rounded back to float32.
_MEAN64 = np.array([0.485, 0.456, 0.406], np.float64)
_STD64 = np.array([0.229, 0.224, 0.225], np.float64)


def normalize_image_paddle(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 ((x / 255) - mean) / std, bit-exact with Paddle's
  NormalizeImage(is_scale=True) on an HWC image."""
  im = image.astype(np.float32) / np.float32(255.0)
  im -= _MEAN64
  im /= _STD64
  return im


def im_scale(height: int, width: int, short_side: int, long_side: int
             ) -> float:
  """Paddle ResizeImage's im_scale: short side to `short_side`, unless the
  long side would then *round* to more than `long_side` (0 = no cap)."""
  size_min, size_max = min(height, width), max(height, width)
  if size_min <= 0:
    raise ValueError(f'image of size {height}x{width}')
  scale = float(short_side) / float(size_min)
  if long_side and np.round(scale * size_max) > long_side:
    scale = float(long_side) / float(size_max)
  return scale


def resized_shape(height, width, short_side: int, long_side: int):
  """(h, w) after the R-CNN resize (what cv2.resize with fx = fy = scale
  returns: round-half-even of scale * size). Vectorised over arrays."""
  h = np.asarray(height, np.float64)
  w = np.asarray(width, np.float64)
  size_min, size_max = np.minimum(h, w), np.maximum(h, w)
  scale = float(short_side) / size_min
  if long_side:
    scale = np.where(np.round(scale * size_max) > long_side,
                     float(long_side) / size_max, scale)
  rh, rw = np.round(scale * h).astype(np.int64), np.round(scale * w).astype(
      np.int64)
  if rh.ndim == 0:
    return int(rh), int(rw)
  return rh, rw


def ceil_to(x: float, multiple: int) -> int:
  return int(math.ceil(float(x) / multiple - 1e-9)) * int(multiple)


def capped_sizes(short_side: int, long_side: int, max_size: int = 0
                 ) -> tuple[int, int, float]:
  """(short_side, long_side, factor) after data.max_size: 0 or >= long_side
  keeps the zoo sizes (factor 1); N caps the long side at N and scales the
  short side by N / long_side (rounded to an integer)."""
  short_side, long_side = int(short_side), int(long_side)
  if not max_size or max_size >= long_side:
    return short_side, long_side, 1.0
  f = max_size / long_side
  return max(1, int(round(short_side * f))), int(max_size), f


def make_buckets(short_side: int, long_side: int, pad_multiple: int = 32,
                 buckets=None, factor: float = 1.0, square: bool = False
                 ) -> list[tuple[int, int]]:
  """Pad shapes (h, w). Default: landscape (ceil(short), ceil(long)) and
  portrait (ceil(long), ceil(short)) rounded up to `pad_multiple`, plus the
  square (ceil(long), ceil(long)) when `square` (eval batches that mix
  orientations). Explicit `buckets` are scaled by `factor` (data.max_size)
  and rounded up to `pad_multiple`. Sorted by area, duplicates removed."""
  if buckets:
    shapes = [(ceil_to(h * factor, pad_multiple),
               ceil_to(w * factor, pad_multiple)) for h, w in buckets]
  else:
    s, l = ceil_to(short_side, pad_multiple), ceil_to(long_side, pad_multiple)
    shapes = [(s, l), (l, s)] + ([(l, l)] if square else [])
  out = []
  for b in sorted(shapes, key=lambda b: (b[0] * b[1], b)):
    if b not in out:
      out.append(b)
  return out


def pick_bucket(shapes, buckets) -> tuple[int, int]:
  """The smallest bucket (by area) that holds every (h, w) in `shapes`."""
  shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
  h, w = int(shapes[:, 0].max()), int(shapes[:, 1].max())
  fits = [b for b in buckets if b[0] >= h and b[1] >= w]
  if not fits:
    raise ValueError(
        f'no shape bucket holds resized images of up to {h}x{w} (h x w); '
        f'buckets are {list(buckets)}. Set data.buckets (or data.short_side '
        '/ data.long_side) so that one bucket fits every image of a batch')
  return min(fits, key=lambda b: (b[0] * b[1], b))


def flip_boxes_legacy(boxes: np.ndarray, width: int) -> np.ndarray:
  """Paddle RandomFlipImage on absolute legacy xyxy: x' = W - x - 1."""
  boxes = np.array(boxes, np.float32).reshape(-1, 4)
  x1 = boxes[:, 0].copy()
  boxes[:, 0] = width - boxes[:, 2] - 1
  boxes[:, 2] = width - x1 - 1
  return boxes


def resize(image: np.ndarray, scale: float) -> np.ndarray:
  """cv2 INTER_LINEAR with fx = fy = scale (Paddle ResizeImage)."""
  return cv2.resize(image, None, None, fx=scale, fy=scale,
                    interpolation=cv2.INTER_LINEAR)


def transform(example: dict, *, short_side: int, long_side: int,
              pad_shape: Sequence[int], flip: bool = False,
              max_boxes: int = 100, with_masks: bool = False,
              mask_points: int = 1024, mask_polygons: int = 64,
              keep_crowd: bool = False, image_dtype: str = 'float32'
              ) -> dict[str, Any]:
  """One raw example -> one R-CNN batch element padded to `pad_shape`.

  image_dtype 'uint8' resizes the unnormalised image (float32) and rounds it to
  uint8, leaving normalising to the model (detx.models.inputs): normalising
  and bilinear resizing commute, so the element is the float path's image
  rounded to the nearest intensity level (within 1/2 level, 0.5/255 of x/255).

  Crowd annotations are dropped unless `keep_crowd` (Paddle's coco_loader
  reads iscrowd=False only); kept ones are flagged in `is_crowd` and count
  in `box_mask`. Boxes beyond `max_boxes` are dropped (logged).
  """
  image = example['image']
  height, width = image.shape[:2]
  boxes, labels, crowd = raw_targets(example)
  n = len(boxes)
  idx = np.arange(n) if keep_crowd else np.nonzero(~crowd)[0]
  if len(idx) > max_boxes:
    logging.warning('image %s: %d boxes beyond data.max_boxes=%d dropped',
                    example.get('image_id'), len(idx) - max_boxes, max_boxes)
    idx = idx[:max_boxes]
  boxes, labels, crowd = boxes[idx], labels[idx], crowd[idx]
  polys = None
  if with_masks:
    segs = example.get('segmentation') or [''] * n
    # Crowd GTs (data.keep_crowd) get no polygons: Paddle's
    # generate_mask_labels never takes them.
    polys = [[] if crowd[k] else
             instance_polygons(segs[i], boxes[k], height, width)
             for k, i in enumerate(idx)]
    if flip:  # Paddle's flip_segms: x' = W - x - 1 (float64, then float32)
      polys = [[np.stack([width - p[:, 0] - 1, p[:, 1]], 1) for p in inst]
               for inst in polys]
  if flip:
    image = image[:, ::-1]
    boxes = flip_boxes_legacy(boxes, width)
  scale = im_scale(height, width, short_side, long_side)
  uint8 = check_image_dtype(image_dtype) == 'uint8'
  im = resize(image.astype(np.float32) if uint8 else
              normalize_image_paddle(image), scale)
  if uint8:
    im = np.rint(im, out=im).astype(np.uint8)
  rh, rw = im.shape[:2]
  ph, pw = int(pad_shape[0]), int(pad_shape[1])
  if rh > ph or rw > pw:
    raise ValueError(
        f'image {example.get("image_id")} ({height}x{width}) resizes to '
        f'{rh}x{rw}, which does not fit its batch bucket {ph}x{pw}')
  out = padding_example(pad_shape, max_boxes, with_masks, mask_points,
                        image_dtype)
  out['image'][:rh, :rw] = im
  out.update(image_hw=np.array([rh, rw], np.int32), scale=np.float32(scale),
             orig_size=np.array([height, width], np.int32),
             image_id=np.int64(example['image_id']), valid=np.bool_(True))
  k = len(boxes)
  out['boxes'][:k] = boxes * np.float32(scale)
  out['classes'][:k] = labels
  out['is_crowd'][:k] = crowd
  out['box_mask'][:k] = True
  if with_masks:
    pack_polygons(polys, out['gt_polys'], out['gt_poly_ids'], mask_polygons,
                  example.get('image_id'))
  return out


def train_example(example: dict, rng: np.random.Generator, augment='full',
                  **kwargs) -> dict[str, Any]:
  """Train element: flip with p=0.5 unless augment is 'none' ('light' and
  'full' are the same here: the zoo's R-CNN feeds only flip)."""
  level = augment_level(augment)
  do_flip = level != 'none' and rng.uniform() < 0.5
  return transform(example, flip=bool(do_flip), **kwargs)


def eval_example(example: dict, **kwargs) -> dict[str, Any]:
  """Eval element: as training without the flip."""
  return transform(example, flip=False, **kwargs)


def padding_example(pad_shape: Sequence[int], max_boxes: int = 100,
                    with_masks: bool = False, mask_points: int = 1024,
                    image_dtype: str = 'float32') -> dict[str, Any]:
  """An all-zero R-CNN batch element with valid=False (eval padding);
  image_hw / orig_size are the pad shape and scale 1 (no degenerate sizes)."""
  ph, pw = int(pad_shape[0]), int(pad_shape[1])
  out = dict(
      image=np.zeros((ph, pw, 3), check_image_dtype(image_dtype)),
      image_hw=np.array([ph, pw], np.int32),
      scale=np.float32(1.0),
      boxes=np.zeros((max_boxes, 4), np.float32),
      classes=np.zeros((max_boxes,), np.int32),
      is_crowd=np.zeros((max_boxes,), bool),
      box_mask=np.zeros((max_boxes,), bool),
      orig_size=np.array([ph, pw], np.int32),
      image_id=np.int64(-1),
      valid=np.bool_(False))
  if with_masks:
    out['gt_polys'] = np.zeros((max_boxes, mask_points, 2), np.float32)
    out['gt_poly_ids'] = np.full((max_boxes, mask_points), -1, np.int32)
  return out


def instance_polygons(segmentation, box, height: int, width: int
                      ) -> list[np.ndarray]:
  """One instance's polygons as float64 [k, 2] vertex arrays (original
  pixels). COCO polygons are kept as they are (every polygon with a point:
  Paddle's loader passes them all, and they all count in Poly2Boxes). Not
  Paddle (its loader reads polygons only): an RLE's outer contours
  (OpenCV, through pixel centres), and the legacy box's corners for an
  instance with no segmentation."""
  seg = mask_lib.parse(segmentation)
  if mask_lib.is_polygon(seg):
    out = [np.asarray(p, np.float64).reshape(-1, 2) for p in seg
           if len(p) >= 2 and len(p) % 2 == 0]
  elif seg:
    m = mask_lib.decode(seg, height, width)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    out = [c.reshape(-1, 2).astype(np.float64) for c in contours]
  else:
    out = []
  if not out:
    x1, y1, x2, y2 = (float(v) for v in box)
    out = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])]
  return out


def pack_polygons(instances, polys: np.ndarray, ids: np.ndarray,
                  max_polygons: int, image_id=None) -> None:
  """Writes instances (lists of [k, 2] polygons) into polys [G, V, 2]
  (float32) and ids [G, V] (the vertex's polygon; -1 stays for padding)."""
  v = polys.shape[1]
  for g, inst in enumerate(instances):
    n = sum(len(p) for p in inst)
    if n > v or len(inst) > max_polygons:
      raise DataError(
          f'image {image_id}: an instance has {len(inst)} polygons of {n} '
          f'vertices in all, beyond model.mask.max_polygons={max_polygons} '
          f'or model.mask.max_points={v}; raise them')
    start = 0
    for j, p in enumerate(inst):
      polys[g, start:start + len(p)] = p
      ids[g, start:start + len(p)] = j
      start += len(p)


def box_polygons(boxes, polys: np.ndarray, ids: np.ndarray) -> None:
  """Each box [k, 4] as its rectangle polygon, written into polys [G, V, 2]
  and ids [G, V] (synthetic batches: benchmarks, tests)."""
  rects = [instance_polygons('', b, 0, 0) for b in np.reshape(boxes, (-1, 4))]
  pack_polygons(rects, polys, ids, 1)
