"""Drawing detections on images (``detx.predict`` and TensorBoard image summaries)."""

from __future__ import annotations

import colorsys
import warnings
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

__all__ = ['class_color', 'draw_detections']

_GOLDEN = 0.618033988749895


def class_color(class_id: int) -> tuple[int, int, int]:
  """A fixed, well-spread RGB colour for a class id (golden-ratio hue walk)."""
  c = int(class_id)
  hue = (0.13 + c * _GOLDEN) % 1.0
  sat = 0.85 if c % 2 == 0 else 0.65
  val = 0.95 if (c // 2) % 2 == 0 else 0.8
  r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
  return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _mask_array(mask: Any, height: int, width: int) -> np.ndarray:
  """[H, W] bool from a binary array or a COCO RLE dict."""
  if isinstance(mask, Mapping):
    from pycocotools import mask as mask_utils
    rle = dict(mask)
    if isinstance(rle.get('counts'), str):
      rle['counts'] = rle['counts'].encode('ascii')
    with warnings.catch_warnings():  # pycocotools vs numpy 2 copy= deprecation
      warnings.simplefilter('ignore', DeprecationWarning)
      mask = mask_utils.decode(rle)
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[-1] == 1:
    m = m[..., 0]
  if m.shape != (height, width):
    raise ValueError(f'mask shape {m.shape} != image shape {(height, width)}')
  return m > (0.5 if m.dtype.kind == 'f' else 0)


def _label_name(class_names: Sequence[str] | None, c: int) -> str:
  if class_names is not None and 0 <= c < len(class_names):
    return str(class_names[c])
  return str(c)


def draw_detections(image_uint8_rgb: np.ndarray,
                    boxes,
                    scores,
                    classes,
                    class_names: Sequence[str] | None = None,
                    score_threshold: float = 0.5,
                    masks=None,
                    valid=None,
                    mask_alpha: float = 0.45) -> np.ndarray:
  """Draws boxes, "name 0.87" labels and optional masks; returns a new image.

  Args:
    image_uint8_rgb: [H, W, 3] uint8 RGB (an [H, W] or [H, W, 1] grey image is
      expanded to RGB). Not modified.
    boxes: [K, 4] xyxy in the image's pixels (legacy +1 convention: x2, y2 are
      the last covered pixel).
    scores: [K]. Only detections with score >= ``score_threshold`` are drawn
      (Paddle's ``draw_threshold``).
    classes: [K] contiguous class ids; ``class_names[c]`` names them (the id
      itself when names are missing). Colours are fixed per class id.
    masks: optional [K, H, W] binary / probability masks, or a length-K sequence
      of [H, W] arrays or COCO RLE dicts, blended in the class colour.
    valid: optional [K] bool; invalid slots are skipped.

  Returns:
    [H, W, 3] uint8 RGB.
  """
  image = np.asarray(image_uint8_rgb)
  if image.dtype != np.uint8:
    raise ValueError(f'expected a uint8 image, got {image.dtype}')
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected [H, W, 3] RGB, got shape {image.shape}')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  out = np.ascontiguousarray(image).copy()
  height, width = out.shape[:2]

  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  classes = np.asarray(classes).reshape(-1).astype(np.int64)
  keep = scores >= score_threshold
  if valid is not None:
    keep &= np.asarray(valid, bool).reshape(-1)
  order = [int(i) for i in np.argsort(scores, kind='stable') if keep[i]]  # best on top

  # Masks first so that boxes and labels stay readable on top of them.
  if masks is not None:
    for i in order:
      m = _mask_array(masks[i], height, width)
      if not m.any():
        continue
      color = np.asarray(class_color(classes[i]), np.float32)
      region = out[m].astype(np.float32)
      out[m] = np.clip(region * (1 - mask_alpha) + color * mask_alpha + 0.5,
                       0, 255).astype(np.uint8)

  thickness = max(1, int(round(0.002 * (height + width))))
  font = cv2.FONT_HERSHEY_SIMPLEX
  font_scale = max(0.35, 0.0009 * (height + width) / 2 * 1.2)
  font_thick = max(1, thickness // 2)
  for i in order:
    x1, y1, x2, y2 = boxes[i]
    if not np.all(np.isfinite(boxes[i])):
      continue
    x1 = int(np.clip(np.floor(x1), 0, width - 1))
    y1 = int(np.clip(np.floor(y1), 0, height - 1))
    x2 = int(np.clip(np.ceil(x2), 0, width - 1))
    y2 = int(np.clip(np.ceil(y2), 0, height - 1))
    if x2 < x1 or y2 < y1:
      continue
    color = class_color(classes[i])
    cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, lineType=cv2.LINE_8)

    text = f'{_label_name(class_names, int(classes[i]))} {scores[i]:.2f}'
    (tw, th), baseline = cv2.getTextSize(text, font, font_scale, font_thick)
    # Label above the box, or inside it when the box touches the top edge.
    ty = y1 - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1 + th + 2
    tx = max(0, min(x1, width - tw - 3))  # keep the label inside the image
    bg_top = max(0, ty - th - 2)
    bg_bottom = min(height - 1, ty + baseline)
    cv2.rectangle(out, (tx, bg_top), (min(width - 1, tx + tw + 2), bg_bottom),
                  color, thickness=-1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (tx + 1, ty), font, font_scale, text_color, font_thick,
                lineType=cv2.LINE_AA)
  return out
