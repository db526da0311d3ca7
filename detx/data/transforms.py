"""Per-example numpy/OpenCV transforms (the only place they live).

The YOLOv3 pipelines follow PaddleDetection's mid-2019 ``YoloTrainFeed`` /
``YoloEvalFeed`` (PADDLEDET_SPEC.md section 4):

train: drop crowd boxes -> mixup (Beta(1.5, 1.5), gt_score) -> NormalizeBox
  -> RandomDistort (PIL ImageEnhance, 4 ops in random order, p=0.5 each)
  -> ExpandImage (p=0.5, ratio U(1,4), ImageNet-mean fill)
  -> CropImage (the 7 samplers) -> RandomInterpImage to the batch's square
  size (Paddle resizes to 608 and RandomShape then resizes the batch; resizing
  straight to the chosen size is equivalent and cheaper) -> flip (p=0.5)
  -> normalise (/255, ImageNet mean/std, RGB) -> pad boxes to `max_boxes`.
eval: INTER_CUBIC resize to the square eval size (aspect not kept), normalise.

The R-CNN / RetinaNet pipelines (``rcnn_train`` / ``rcnn_eval``, Paddle's
FasterRCNN/MaskRCNN feeds) are in the second half of this file: flip,
normalise before resizing, short side 800 / long side 1333, zero-pad into a
shape bucket; boxes stay absolute legacy xyxy (scaled to the resized image)
and Mask R-CNN targets are per-instance crops (detx/data/masks.py).

Boxes inside the pipeline are normalised xyxy in [0, 1]; raw examples carry
absolute legacy-pixel xyxy (see detx/data/coco.py). Every random function takes
an explicit ``np.random.Generator`` and is otherwise pure.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np
from absl import logging
from PIL import Image, ImageEnhance

from detx.data import masks as mask_lib

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
EXPAND_FILL = (123.675, 116.28, 103.53)  # ImageNet mean x 255, RGB
INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA,
           cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
# [max_sample, max_trial, min_scale, max_scale, min_ar, max_ar, min_iou,
#  max_iou] (YoloTrainFeed's CropImage).
YOLO_SAMPLERS = (
    (1, 1, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.1, 1.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.3, 1.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.5, 1.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.7, 1.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.9, 1.0),
    (1, 50, 0.3, 1.0, 0.5, 2.0, 0.0, 1.0),
)


def scale_sizes(sizes: Sequence[int] | int, max_size: int) -> list[int]:
  """Caps a list of square sizes at `max_size` (0 = unchanged).

  All sizes scale by max_size / max(sizes) (only ever down), are rounded to
  the nearest multiple of 32 (at least 64, at most max_size rounded down to a
  multiple of 32 when that is >= 64) and deduplicated, ascending.
  """
  if isinstance(sizes, (int, np.integer)):
    sizes = [int(sizes)]
  sizes = [int(s) for s in sizes]
  if not sizes:
    raise ValueError('empty size list')
  if not max_size or max_size >= max(sizes):
    return sizes
  f = max_size / max(sizes)
  top = max(64, max_size // 32 * 32)
  return sorted({min(top, max(64, int(math.floor(s * f / 32 + 0.5)) * 32))
                 for s in sizes})


# ----------------------------------------------------------------------------
# Box helpers (normalised xyxy).

def _area(b: np.ndarray) -> np.ndarray:
  w = b[:, 2] - b[:, 0]
  h = b[:, 3] - b[:, 1]
  return np.where((w < 0) | (h < 0), 0.0, w * h)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU [len(a), len(b)] of xyxy boxes without the +1 (normalised coords)."""
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = np.clip(rb - lt, 0, None)
  inter = wh[..., 0] * wh[..., 1]
  union = _area(a)[:, None] + _area(b)[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def filter_and_project(window: Sequence[float], boxes: np.ndarray):
  """Paddle's filter_and_process: keep boxes whose centre lies in `window`
  (normalised xyxy) and that overlap it, re-express them in the window's
  coordinates clipped to [0, 1], drop empty ones. Returns (boxes, keep_idx)."""
  x0, y0, x1, y1 = window
  cx = (boxes[:, 0] + boxes[:, 2]) / 2
  cy = (boxes[:, 1] + boxes[:, 3]) / 2
  keep = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
  keep &= ~((boxes[:, 0] >= x1) | (boxes[:, 2] <= x0) |
            (boxes[:, 1] >= y1) | (boxes[:, 3] <= y0))
  sw, sh = x1 - x0, y1 - y0
  nb = (boxes - np.array([x0, y0, x0, y0])) / np.array([sw, sh, sw, sh])
  nb = np.clip(nb, 0.0, 1.0)
  keep &= _area(nb) > 0
  idx = np.nonzero(keep)[0]
  return nb[idx].astype(np.float32), idx


# ----------------------------------------------------------------------------
# YOLOv3 train operators. A "target" is a dict of per-box arrays
# (boxes, labels, scores, ...) that are filtered together.

def _take(target: dict, idx) -> dict:
  return {k: v[idx] for k, v in target.items()}


def mixup(image1, target1, image2, target2, factor: float):
  """Paddle MixupImage: both images top-left on a max(h) x max(w) zero canvas,
  pixels img1*f + img2*(1-f) truncated to uint8, boxes concatenated with
  gt_score multiplied by f and 1-f. Boxes are absolute pixels."""
  factor = float(min(1.0, max(0.0, factor)))
  if factor >= 1.0:
    return image1, target1
  if factor <= 0.0:
    return image2, target2
  h = max(image1.shape[0], image2.shape[0])
  w = max(image1.shape[1], image2.shape[1])
  img = np.zeros((h, w, 3), np.float32)
  img[:image1.shape[0], :image1.shape[1]] = image1.astype(np.float32) * factor
  img[:image2.shape[0], :image2.shape[1]] += (
      image2.astype(np.float32) * (1.0 - factor))
  t1 = dict(target1, scores=target1['scores'] * factor)
  t2 = dict(target2, scores=target2['scores'] * (1.0 - factor))
  target = {k: np.concatenate([t1[k], t2[k]]) for k in target1}
  return img.astype(np.uint8), target


def random_distort(image: np.ndarray, rng: np.random.Generator,
                   lower=0.5, upper=1.5, hue=18.0, prob=0.5) -> np.ndarray:
  """Paddle RandomDistort (is_order=False): brightness, contrast, saturation
  (PIL ImageEnhance x U(0.5, 1.5)) and hue (+U(-18, 18) on PIL's 0-255 HSV H,
  wrapping), in random order, each applied with probability 0.5."""
  im = Image.fromarray(image)

  def enhance(cls):
    def op(im):
      delta = rng.uniform(lower, upper)
      if rng.uniform() < prob:
        im = cls(im).enhance(delta)
      return im
    return op

  def random_hue(im):
    delta = rng.uniform(-hue, hue)
    if rng.uniform() < prob:
      hsv = np.array(im.convert('HSV'))
      hsv[..., 0] = np.mod(hsv[..., 0].astype(np.float32) + delta,
                           256).astype(np.uint8)
      im = Image.fromarray(hsv, mode='HSV').convert('RGB')
    return im

  ops = [enhance(ImageEnhance.Brightness), enhance(ImageEnhance.Contrast),
         enhance(ImageEnhance.Color), random_hue]
  for i in rng.permutation(len(ops)):
    im = ops[i](im)
  return np.asarray(im)


def random_expand(image: np.ndarray, target: dict, rng: np.random.Generator,
                  max_ratio=4.0, prob=0.5, fill=EXPAND_FILL):
  """Paddle ExpandImage: with prob, place the image at a random offset on a
  canvas ratio U(1, max_ratio) times larger filled with `fill`."""
  if rng.uniform() >= prob or max_ratio - 1 < 0.01:
    return image, target
  ih, iw = image.shape[:2]
  ratio = rng.uniform(1, max_ratio)
  h, w = int(ih * ratio), int(iw * ratio)
  oy = math.floor(rng.uniform(0, h - ih))
  ox = math.floor(rng.uniform(0, w - iw))
  canvas = np.empty((h, w, 3), np.uint8)
  canvas[:] = np.uint8(np.asarray(fill))
  canvas[oy:oy + ih, ox:ox + iw] = image
  window = (-ox / iw, -oy / ih, (w - ox) / iw, (h - oy) / ih)
  boxes, idx = filter_and_project(window, target['boxes'])
  target = _take(target, idx)
  target['boxes'] = boxes
  return canvas, target


def _sample_windows(sampler, rng: np.random.Generator) -> np.ndarray:
  """`max_trial` candidate windows of one sampler (Paddle
  generate_sample_bbox), normalised xyxy."""
  n = int(sampler[1])
  scale = rng.uniform(sampler[2], sampler[3], n)
  ar = rng.uniform(sampler[4], sampler[5], n)
  ar = np.minimum(np.maximum(ar, scale ** 2), 1 / scale ** 2)
  bw = scale * np.sqrt(ar)
  bh = scale / np.sqrt(ar)
  x0 = rng.uniform(0, 1, n) * (1 - bw)
  y0 = rng.uniform(0, 1, n) * (1 - bh)
  return np.stack([x0, y0, x0 + bw, y0 + bh], 1)


def random_crop(image: np.ndarray, target: dict, rng: np.random.Generator,
                samplers=YOLO_SAMPLERS, avoid_no_bbox=True):
  """Paddle CropImage (satisfy_all=False): each sampler keeps the first of its
  `max_trial` candidates whose IoU with any GT is in [min_iou, max_iou]; one
  kept window is picked uniformly; boxes whose centre is inside are kept,
  re-expressed in the window and clipped; windows leaving no box are skipped.
  Returns the original example when no window qualifies."""
  gt = target['boxes']
  found = []
  for s in samplers:
    windows = _sample_windows(s, rng)
    if s[6] == 0 and s[7] == 0:
      ok = np.ones(len(windows), bool)
    elif len(gt) == 0:
      ok = np.zeros(len(windows), bool)
    else:
      ov = iou(windows, gt)
      sat = np.ones_like(ov, bool)
      if s[6] != 0:
        sat &= ov >= s[6]
      if s[7] != 0:
        sat &= ov <= s[7]
      ok = sat.any(1)
    hits = np.nonzero(ok)[0][:int(s[0])]
    found.extend(windows[hits])
  h, w = image.shape[:2]
  while found:
    window = np.clip(found.pop(int(rng.uniform(0, len(found)))), 0.0, 1.0)
    boxes, idx = filter_and_project(window, gt)
    if avoid_no_bbox and len(idx) == 0:
      continue
    x0, x1 = int(window[0] * w), int(window[2] * w)
    y0, y1 = int(window[1] * h), int(window[3] * h)
    if x1 <= x0 or y1 <= y0:
      continue
    target = _take(target, idx)
    target['boxes'] = boxes
    return image[y0:y1, x0:x1], target
  return image, target


def resize(image: np.ndarray, size: int, interp=cv2.INTER_CUBIC) -> np.ndarray:
  """Resize to exactly size x size (aspect ratio not kept)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return cv2.resize(image, (size, size), interpolation=interp)


def flip(image: np.ndarray, boxes: np.ndarray):
  """Horizontal flip of an image and its normalised xyxy boxes."""
  boxes = boxes.copy()
  boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
  return image[:, ::-1], boxes


def normalize_image(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 (x/255 - ImageNet mean) / std."""
  out = np.subtract(image, MEAN * 255, dtype=np.float32)
  out *= 1 / (STD * 255)
  return out


def normalize_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Paddle NormalizeBox: absolute xyxy / (w, h, w, h)."""
  return (np.asarray(boxes, np.float32).reshape(-1, 4)
          / np.array([width, height, width, height], np.float32))


def pad_targets(target: dict, max_boxes: int) -> dict[str, np.ndarray]:
  """Pads/truncates to `max_boxes`; mask marks real boxes of positive size."""
  b = np.asarray(target['boxes'], np.float32).reshape(-1, 4)[:max_boxes]
  n = len(b)
  boxes = np.zeros((max_boxes, 4), np.float32)
  boxes[:n] = b
  classes = np.zeros((max_boxes,), np.int32)
  classes[:n] = np.asarray(target['labels'])[:max_boxes]
  scores = np.zeros((max_boxes,), np.float32)
  scores[:n] = np.asarray(target['scores'])[:max_boxes]
  mask = np.zeros((max_boxes,), bool)
  mask[:n] = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
  return dict(boxes=boxes, classes=classes, scores=scores, box_mask=mask)


def _target(example: dict) -> dict:
  """Absolute-pixel target of a raw example, crowd boxes removed (Paddle's
  coco_loader loads only iscrowd=False annotations). `boxes`, `labels` and
  `is_crowd` are optional (an unannotated image has no boxes)."""
  boxes = np.asarray(example.get('boxes', np.zeros((0, 4))),
                     np.float32).reshape(-1, 4)
  labels = np.asarray(example.get('labels', np.zeros((len(boxes),))),
                      np.int32).reshape(-1)
  crowd = np.asarray(example.get('is_crowd', np.zeros((len(boxes),))),
                     bool).reshape(-1)
  keep = ~crowd
  return dict(boxes=boxes[keep], labels=labels[keep],
              scores=np.ones(int(keep.sum()), np.float32))


def _output(example, image, target, max_boxes) -> dict[str, Any]:
  out = pad_targets(target, max_boxes)
  out.update(
      image=normalize_image(image),
      image_id=np.int64(example['image_id']),
      orig_size=np.array(example['image'].shape[:2], np.int32),
      valid=np.bool_(True))
  return out


AUGMENT_LEVELS = ('none', 'light', 'full')


def augment_level(augment) -> str:
  """config data.augment: True/'full' (the zoo recipe), 'light' (colour + flip,
  for short schedules), False/'none' (resize + normalise only)."""
  if augment is True:
    return 'full'
  if augment is False:
    return 'none'
  if augment not in AUGMENT_LEVELS:
    raise ValueError(f'data.augment={augment!r}; expected one of {AUGMENT_LEVELS} or a bool')
  return augment


def yolo_train(example: dict, size: int, rng: np.random.Generator,
               partner: dict | None = None, augment='full',
               max_boxes: int = 50) -> dict[str, Any]:
  """The YOLOv3 train pipeline on one raw example -> one batch element.

  `partner` (another raw example) turns mixup on. augment='none' only resizes
  (INTER_CUBIC, as eval) and normalises; 'light' adds colour distortion and flip.
  """
  level = augment_level(augment)
  image = example['image']
  target = _target(example)
  if level == 'none':
    target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
    return _output(example, resize(image, size), target, max_boxes)
  if partner is not None:
    factor = rng.beta(1.5, 1.5)
    image, target = mixup(image, target, partner['image'], _target(partner),
                          factor)
  target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
  image = random_distort(image, rng)
  if level == 'full':
    image, target = random_expand(image, target, rng)
    image, target = random_crop(image, target, rng)
    image = resize(image, size, INTERPS[int(rng.integers(len(INTERPS)))])
  else:
    image = resize(image, size)
  if rng.uniform() < 0.5:
    image, target['boxes'] = flip(image, target['boxes'])
  return _output(example, image, target, max_boxes)


def yolo_eval(example: dict, size: int, max_boxes: int = 50
              ) -> dict[str, Any]:
  """Eval/test: INTER_CUBIC resize to size x size, normalise. Boxes (for
  reference) normalised by the original size."""
  image = example['image']
  target = _target(example)
  target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
  return _output(example, resize(image, size, cv2.INTER_CUBIC), target,
                 max_boxes)


def padding_example(size: int, max_boxes: int = 50) -> dict[str, Any]:
  """An all-zero batch element with valid=False (eval batch padding)."""
  return dict(
      image=np.zeros((size, size, 3), np.float32),
      boxes=np.zeros((max_boxes, 4), np.float32),
      classes=np.zeros((max_boxes,), np.int32),
      scores=np.zeros((max_boxes,), np.float32),
      box_mask=np.zeros((max_boxes,), bool),
      image_id=np.int64(-1),
      orig_size=np.array([size, size], np.int32),
      valid=np.bool_(False))


# ----------------------------------------------------------------------------
# R-CNN / RetinaNet (Paddle FasterRCNNTrainFeed / MaskRCNNTrainFeed and the
# eval feeds, PADDLEDET_SPEC.md section 4):
#
#   decode RGB -> flip (p=0.5; legacy boxes x' = W - x - 1, mask crops
#   mirrored) -> normalise (/255, ImageNet mean/std, on the full-resolution
#   HWC image, in Paddle's float order) -> resize (short side to
#   `short_side`, long side capped at `long_side`, one common scale, cv2
#   INTER_LINEAR with fx = fy = scale) -> zero-pad bottom/right into the
#   batch's bucket.
#
# Boxes come out in resized pixels (original * scale, legacy xyxy); Paddle
# keeps them in original pixels and multiplies by im_info's scale inside
# rpn_target_assign / generate_proposal_labels, which is the same numbers.

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


def rcnn_scale(height: int, width: int, short_side: int, long_side: int
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


def rcnn_resized_shape(height, width, short_side: int, long_side: int):
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


def rcnn_sizes(short_side: int, long_side: int, max_size: int = 0
               ) -> tuple[int, int, float]:
  """(short_side, long_side, factor) after data.max_size: 0 or >= long_side
  keeps the zoo sizes (factor 1); N caps the long side at N and scales the
  short side by N / long_side (rounded to an integer)."""
  short_side, long_side = int(short_side), int(long_side)
  if not max_size or max_size >= long_side:
    return short_side, long_side, 1.0
  f = max_size / long_side
  return max(1, int(round(short_side * f))), int(max_size), f


def rcnn_buckets(short_side: int, long_side: int, pad_multiple: int = 32,
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


def rcnn_resize(image: np.ndarray, scale: float) -> np.ndarray:
  """cv2 INTER_LINEAR with fx = fy = scale (Paddle ResizeImage)."""
  return cv2.resize(image, None, None, fx=scale, fy=scale,
                    interpolation=cv2.INTER_LINEAR)


def rcnn_example(example: dict, *, short_side: int, long_side: int,
                 pad_shape: Sequence[int], flip: bool = False,
                 max_boxes: int = 100, with_masks: bool = False,
                 mask_size: int = 112, keep_crowd: bool = False
                 ) -> dict[str, Any]:
  """One raw example -> one R-CNN batch element padded to `pad_shape`.

  Crowd annotations are dropped unless `keep_crowd` (Paddle's coco_loader
  reads iscrowd=False only); kept ones are flagged in `is_crowd` and count
  in `box_mask`. Boxes beyond `max_boxes` are dropped (logged).
  """
  image = example['image']
  height, width = image.shape[:2]
  boxes = np.asarray(example.get('boxes', np.zeros((0, 4))),
                     np.float32).reshape(-1, 4)
  n = len(boxes)
  labels = np.asarray(example.get('labels', np.zeros((n,))),
                      np.int32).reshape(-1)
  crowd = np.asarray(example.get('is_crowd', np.zeros((n,))),
                     bool).reshape(-1)
  idx = np.arange(n) if keep_crowd else np.nonzero(~crowd)[0]
  if len(idx) > max_boxes:
    logging.warning('image %s: %d boxes beyond data.max_boxes=%d dropped',
                    example.get('image_id'), len(idx) - max_boxes, max_boxes)
    idx = idx[:max_boxes]
  boxes, labels, crowd = boxes[idx], labels[idx], crowd[idx]
  gt_masks = None
  if with_masks:
    segs = example.get('segmentation') or [''] * n
    gt_masks = mask_lib.crop_masks([segs[i] for i in idx], boxes, mask_size,
                                   height, width)
  if flip:
    image = image[:, ::-1]
    boxes = flip_boxes_legacy(boxes, width)
    if gt_masks is not None:
      gt_masks = np.ascontiguousarray(gt_masks[:, :, ::-1])
  scale = rcnn_scale(height, width, short_side, long_side)
  im = rcnn_resize(normalize_image_paddle(image), scale)
  rh, rw = im.shape[:2]
  ph, pw = int(pad_shape[0]), int(pad_shape[1])
  if rh > ph or rw > pw:
    raise ValueError(
        f'image {example.get("image_id")} ({height}x{width}) resizes to '
        f'{rh}x{rw}, which does not fit its batch bucket {ph}x{pw}')
  padded = np.zeros((ph, pw, 3), np.float32)
  padded[:rh, :rw] = im
  k = len(boxes)
  out = dict(
      image=padded,
      image_hw=np.array([rh, rw], np.int32),
      scale=np.float32(scale),
      boxes=np.zeros((max_boxes, 4), np.float32),
      classes=np.zeros((max_boxes,), np.int32),
      is_crowd=np.zeros((max_boxes,), bool),
      box_mask=np.zeros((max_boxes,), bool),
      orig_size=np.array([height, width], np.int32),
      image_id=np.int64(example['image_id']),
      valid=np.bool_(True))
  out['boxes'][:k] = boxes * np.float32(scale)
  out['classes'][:k] = labels
  out['is_crowd'][:k] = crowd
  out['box_mask'][:k] = True
  if with_masks:
    out['gt_masks'] = np.zeros((max_boxes, mask_size, mask_size), np.uint8)
    out['gt_masks'][:k] = gt_masks
  return out


def rcnn_train(example: dict, rng: np.random.Generator, augment='full',
               **kwargs) -> dict[str, Any]:
  """Train element: flip with p=0.5 unless augment is 'none' ('light' and
  'full' are the same here: the zoo's R-CNN feeds only flip)."""
  level = augment_level(augment)
  do_flip = level != 'none' and rng.uniform() < 0.5
  return rcnn_example(example, flip=bool(do_flip), **kwargs)


def rcnn_eval(example: dict, **kwargs) -> dict[str, Any]:
  """Eval element: as training without the flip."""
  return rcnn_example(example, flip=False, **kwargs)


def rcnn_padding_example(pad_shape: Sequence[int], max_boxes: int = 100,
                         with_masks: bool = False, mask_size: int = 112
                         ) -> dict[str, Any]:
  """An all-zero R-CNN batch element with valid=False (eval padding);
  image_hw / orig_size are the pad shape and scale 1 (no degenerate sizes)."""
  ph, pw = int(pad_shape[0]), int(pad_shape[1])
  out = dict(
      image=np.zeros((ph, pw, 3), np.float32),
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
    out['gt_masks'] = np.zeros((max_boxes, mask_size, mask_size), np.uint8)
  return out
