"""The SSD transforms, after PaddleDetection 597145c's ``SSDTrainFeed`` / ``SSDEvalFeed``
(ppdet/data/data_feed.py, ppdet/data/transform/operators.py, op_helper.py):

train: drop crowd boxes (COCO) -> NormalizeBox -> RandomDistort(is_order=True:
  brightness 0.875-1.125, contrast 0.5-1.5, saturation 0.5-1.5, hue -18..18, each with
  p 0.5; the order brightness, contrast, saturation, hue, or with p 0.5 brightness,
  saturation, hue, contrast) -> ExpandImage (p 0.5, ratio U(1, 4), fill 127.5, i.e. the
  uint8 127) -> CropImage (the seven SSD samplers: no IoU upper bound, satisfy_all
  False, avoid_no_bbox False: a crop may leave no box) -> ResizeImage to 300 x 300 with
  PIL resample 1 (LANCZOS) -> RandomFlipImage (p 0.5, normalised boxes) -> Permute (to
  BGR) -> NormalizeImage (x - 127.5) / 127.502231.
eval: NormalizeBox -> the same resize -> BGR -> normalise.

Boxes are normalised xyxy in [0, 1] throughout; VOC's difficult boxes are trained on
(Paddle's VOC loader keeps them; only the evaluation ignores them).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from detx.data.transforms import augment_level, raw_targets
from detx.data.transforms import yolo as Y

SIZE = 300
MEAN = 127.5
STD = 127.502231
EXPAND_FILL = (127.5, 127.5, 127.5)
# SSDTrainFeed's CropImage samplers [max_sample, max_trial, min_scale, max_scale, min_ar,
# max_ar, min_iou, max_iou]: YOLO's seven with no IoU upper bound (max_iou 0) wherever a
# lower bound is set; the first (the whole image) and the last (any overlap) as YOLO's.
SAMPLERS = tuple(s[:7] + ((0.0,) if s[6] else s[7:]) for s in Y.SAMPLERS)
# RandomDistort's ranges (SSDTrainFeed: brightness narrowed, the rest the defaults).
BRIGHTNESS = (0.875, 1.125)
CONTRAST = (0.5, 1.5)
SATURATION = (0.5, 1.5)
HUE = (-18.0, 18.0)
DISTORT_PROB = 0.5


def _enhance(im, enhancer, bounds, rng):
  factor = rng.uniform(*bounds)     # Paddle draws the factor, then the coin
  return enhancer(im).enhance(factor) if rng.uniform(0, 1) < DISTORT_PROB else im


def _hue(im, rng):
  shift = rng.uniform(*HUE)
  if rng.uniform(0, 1) >= DISTORT_PROB:
    return im
  hsv = np.array(im.convert('HSV'))
  hsv[..., 0] = (hsv[..., 0].astype(np.float64) + shift).astype(np.int64).astype(np.uint8)
  return Image.fromarray(hsv, mode='HSV').convert('RGB')


def ordered_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Paddle RandomDistort with is_order=True (see the module docstring)."""
  ops = {'b': lambda im: _enhance(im, ImageEnhance.Brightness, BRIGHTNESS, rng),
         'c': lambda im: _enhance(im, ImageEnhance.Contrast, CONTRAST, rng),
         's': lambda im: _enhance(im, ImageEnhance.Color, SATURATION, rng),
         'h': lambda im: _hue(im, rng)}
  order = 'bshc' if rng.uniform(0, 1) < 0.5 else 'bcsh'
  im = Image.fromarray(image)
  for key in order:
    im = ops[key](im)
  return np.asarray(im)


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Paddle ResizeImage(use_cv2=False, interp=1): PIL resize to size x size, LANCZOS."""
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def normalize(image: np.ndarray) -> np.ndarray:
  """RGB uint8 -> BGR float32 (x - 127.5) / 127.502231 (Permute then NormalizeImage)."""
  return ((image[..., ::-1].astype(np.float32) - MEAN) / STD).astype(np.float32)


def _element(example, image, target, max_boxes) -> dict[str, Any]:
  out = Y.pad_targets(target, max_boxes)
  out.update(image=normalize(image), image_id=np.int64(example['image_id']),
             orig_size=np.array(example['image'].shape[:2], np.int32), valid=np.bool_(True))
  return out


def _normalised_target(example) -> dict:
  """Non-crowd boxes (normalised), their labels and unit scores."""
  boxes, labels, crowd = raw_targets(example)
  h, w = example['image'].shape[:2]
  return dict(boxes=Y.normalize_boxes(boxes[~crowd], h, w), labels=labels[~crowd],
              scores=np.ones(int((~crowd).sum()), np.float32))


def train_example(example: dict, rng: np.random.Generator, size: int = SIZE,
                  augment='full', max_boxes: int = 64) -> dict[str, Any]:
  """The SSD train pipeline on one raw example -> one batch element. augment 'none':
  resize and normalise only; 'light': colour distortion and flip; 'full': Paddle's."""
  level = augment_level(augment)
  image, target = example['image'], _normalised_target(example)
  if level != 'none':
    image = ordered_distort(image, rng)
  if level == 'full':
    image, target = Y.random_expand(image, target, rng, fill=EXPAND_FILL)
    image, target = Y.random_crop(image, target, rng, SAMPLERS, avoid_no_bbox=False)
  image = resize(image, size)
  if level != 'none' and rng.uniform(0, 1) < 0.5:
    image, target['boxes'] = Y.flip(image, target['boxes'])
  return _element(example, image, target, max_boxes)


def eval_example(example: dict, size: int = SIZE, max_boxes: int = 64) -> dict[str, Any]:
  """Eval / test: resize, BGR, normalise; boxes (for reference) normalised."""
  return _element(example, resize(example['image'], size), _normalised_target(example),
                  max_boxes)


def padding_example(size: int = SIZE, max_boxes: int = 64) -> dict[str, Any]:
  """An all-zero element with valid=False (eval batch padding, model init)."""
  return Y.padding_example(size, max_boxes)
