"""The YOLOv3 transforms, after PaddleDetection's mid-2019 ``YoloTrainFeed`` /
``YoloEvalFeed`` (PADDLEDET_SPEC.md section 4):

train: drop crowd boxes -> mixup (Beta(1.5, 1.5), gt_score) -> NormalizeBox
  -> RandomDistort (PIL ImageEnhance, 4 ops in random order, p=0.5 each)
  -> ExpandImage (p=0.5, ratio U(1,4), ImageNet-mean fill)
  -> CropImage (the 7 samplers) -> RandomInterpImage to `target_size` (608:
  one of the 5 OpenCV interpolations, uniformly) -> flip (p=0.5) -> RandomShape:
  INTER_NEAREST to the batch's square size (320..608) -> normalise (/255,
  ImageNet mean/std, RGB) -> pad boxes to `max_boxes`. Paddle normalised before
  RandomShape; nearest-neighbour only picks pixels, so the order is the same.
eval: INTER_CUBIC resize to the square eval size (aspect not kept), normalise.

Boxes inside the pipeline are normalised xyxy in [0, 1].
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from detx.data.transforms import (augment_level, check_image_dtype, normalize_image,
                                  raw_targets)

EXPAND_FILL = (123.675, 116.28, 103.53)  # ImageNet mean x 255, RGB
INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA,
           cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
# [max_sample, max_trial, min_scale, max_scale, min_ar, max_ar, min_iou,
#  max_iou] (YoloTrainFeed's CropImage).
SAMPLERS = (
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
                samplers=SAMPLERS, avoid_no_bbox=True):
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


def random_shape(image: np.ndarray, boxes: np.ndarray, size: int,
                 target_size: int, interp: int, flipped: bool):
  """Paddle's YOLOv3 resize path with its random draws given: RandomInterpImage
  (cv2 `interp` to target_size x target_size), RandomFlipImage when `flipped`,
  then RandomShape (INTER_NEAREST to size x size). Boxes are normalised, so
  only the flip moves them."""
  image = resize(image, target_size, interp)
  if flipped:
    image, boxes = flip(image, boxes)
  return resize(image, size, cv2.INTER_NEAREST), boxes


def flip(image: np.ndarray, boxes: np.ndarray):
  """Horizontal flip of an image and its normalised xyxy boxes."""
  boxes = boxes.copy()
  boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
  return image[:, ::-1], boxes




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
  boxes, labels, crowd = raw_targets(example)
  keep = ~crowd
  return dict(boxes=boxes[keep], labels=labels[keep],
              scores=np.ones(int(keep.sum()), np.float32))


def _output(example, image, target, max_boxes, image_dtype='float32'
            ) -> dict[str, Any]:
  """The element; image_dtype 'uint8' leaves normalising to the model
  (detx.models.inputs), the same arithmetic on the same resized pixels."""
  out = pad_targets(target, max_boxes)
  uint8 = check_image_dtype(image_dtype) == 'uint8'
  out.update(
      image=np.ascontiguousarray(image, np.uint8) if uint8 else normalize_image(image),
      image_id=np.int64(example['image_id']),
      orig_size=np.array(example['image'].shape[:2], np.int32),
      valid=np.bool_(True))
  return out


def train_example(example: dict, size: int, rng: np.random.Generator,
                  partner: dict | None = None, augment='full',
                  max_boxes: int = 50, target_size: int | None = None,
                  image_dtype: str = 'float32') -> dict[str, Any]:
  """The YOLOv3 train pipeline on one raw example -> one batch element.

  `partner` (another raw example) turns mixup on. augment='none' only resizes
  (INTER_CUBIC, as eval) and normalises; 'light' adds colour distortion and flip.
  'full' resizes through `target_size` (default `size`; the pipeline passes the
  largest train size, Paddle's 608) as :func:`random_shape`.
  """
  level = augment_level(augment)
  image = example['image']
  target = _target(example)
  if level == 'none':
    target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
    return _output(example, resize(image, size), target, max_boxes, image_dtype)
  if partner is not None:
    factor = rng.beta(1.5, 1.5)
    image, target = mixup(image, target, partner['image'], _target(partner),
                          factor)
  target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
  image = random_distort(image, rng)
  if level == 'full':
    image, target = random_expand(image, target, rng)
    image, target = random_crop(image, target, rng)
    interp = INTERPS[int(rng.integers(len(INTERPS)))]
    image, target['boxes'] = random_shape(
        image, target['boxes'], size, target_size or size, interp,
        rng.uniform() < 0.5)
    return _output(example, image, target, max_boxes, image_dtype)
  image = resize(image, size)
  if rng.uniform() < 0.5:
    image, target['boxes'] = flip(image, target['boxes'])
  return _output(example, image, target, max_boxes, image_dtype)


def eval_example(example: dict, size: int, max_boxes: int = 50,
                 image_dtype: str = 'float32') -> dict[str, Any]:
  """Eval/test: INTER_CUBIC resize to size x size, normalise. Boxes (for
  reference) normalised by the original size."""
  image = example['image']
  target = _target(example)
  target['boxes'] = normalize_boxes(target['boxes'], *image.shape[:2])
  return _output(example, resize(image, size, cv2.INTER_CUBIC), target,
                 max_boxes, image_dtype)


def padding_example(size: int, max_boxes: int = 50, image_dtype: str = 'float32'
                    ) -> dict[str, Any]:
  """An all-zero batch element with valid=False (eval batch padding)."""
  out = pad_targets(dict(boxes=np.zeros((0, 4), np.float32), labels=[], scores=[]),
                    max_boxes)
  out.update(image=np.zeros((size, size, 3), check_image_dtype(image_dtype)),
             image_id=np.int64(-1),
             orig_size=np.array([size, size], np.int32), valid=np.bool_(False))
  return out

