"""A small generated COCO-format dataset of coloured shapes (no download).

``generate(out_dir)`` writes the standard COCO layout::

    out_dir/annotations/instances_{train,val}2017.json
    out_dir/{train,val}2017/<12-digit id>.jpg

Four classes (circle, square, triangle, cross), each in its own colour, 1-6
objects per image with sizes 12-60% of the image side over noisy gradient
backgrounds. Overlaps are allowed, but a new shape covers < 40% of the box
of any shape drawn before it, so no object is mostly hidden.
Annotations carry bbox, area (polygon area), iscrowd 0 and a polygon
segmentation. Output is a deterministic function of the arguments.

``ensure(dir)`` generates the default dataset there unless it already exists,
atomically (write to a temporary sibling, then rename).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

DEFAULT_DIR = '~/.cache/detx/shapes_v1'
CATEGORIES = [
    dict(id=1, name='circle', supercategory='shape'),
    dict(id=2, name='square', supercategory='shape'),
    dict(id=3, name='triangle', supercategory='shape'),
    dict(id=4, name='cross', supercategory='shape'),
]
# RGB, one distinct hue per class.
COLOURS = {1: (225, 45, 45), 2: (40, 200, 70), 3: (50, 90, 235),
           4: (235, 215, 40)}
VAL_ID_OFFSET = 1_000_000


def _polygon(cat: int, cx: float, cy: float, s: float, angle: float):
  """Polygon (float [k, 2]) of a shape with extent ~s centred at (cx, cy)."""
  r = s / 2
  if cat == 1:  # circle
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    return pts + (cx, cy)
  if cat == 2:  # square, axis aligned
    pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r
  elif cat == 3:  # triangle, rotated
    t = angle + np.array([0, 2, 4]) * np.pi / 3
    pts = np.stack([np.cos(t), np.sin(t)], 1) * r
  else:  # cross (plus sign), arm width s/3
    a, b = r, r / 3
    pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                    [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])
  return pts + (cx, cy)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  c0 = rng.uniform(20, 160, 3)
  c1 = rng.uniform(20, 160, 3)
  angle = rng.uniform(0, 2 * np.pi)
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  t = (np.cos(angle) * xx + np.sin(angle) * yy)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
  img = c0 + (c1 - c0) * t[..., None]
  img += rng.normal(0, 12, img.shape)
  return img


def _covered(new, old):
  """Fraction of box `old` that box `new` (drawn on top) covers."""
  ix = max(0.0, min(new[2], old[2]) - max(new[0], old[0]))
  iy = max(0.0, min(new[3], old[3]) - max(new[1], old[1]))
  return ix * iy / max((old[2] - old[0]) * (old[3] - old[1]), 1e-9)


def _image(rng: np.random.Generator, size: int):
  """One image (uint8 RGB) and its objects [(cat, polygon)]."""
  img = _background(rng, size)
  objs, boxes = [], []
  n = int(rng.integers(1, 7))
  for _ in range(n):
    for _attempt in range(30):
      cat = int(rng.integers(1, 5))
      s = rng.uniform(0.12, 0.6) * size
      cx, cy = rng.uniform(s / 2, size - s / 2, 2)
      poly = _polygon(cat, cx, cy, s, rng.uniform(0, 2 * np.pi))
      poly = np.clip(poly, 0, size - 1)
      box = (*poly.min(0), *poly.max(0))
      if all(_covered(box, b) < 0.4 for b in boxes):
        break
    else:
      continue
    colour = np.clip(np.array(COLOURS[cat]) + rng.normal(0, 12, 3), 0, 255)
    pts = np.round(poly * 16).astype(np.int32)
    cv2.fillPoly(img, [pts], colour.tolist(), lineType=cv2.LINE_AA, shift=4)
    objs.append((cat, poly))
    boxes.append(box)
  return np.clip(img, 0, 255).astype(np.uint8), objs


def _split(out: Path, split: str, num: int, size: int, seed: int,
           id_offset: int, ann_offset: int) -> int:
  img_dir = out / f'{split}2017'
  img_dir.mkdir(parents=True)
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  images, anns = [], []
  ann_id = ann_offset
  for k in range(num):
    image_id = id_offset + k + 1
    img, objs = _image(rng, size)
    name = f'{image_id:012d}.jpg'
    ok, buf = cv2.imencode('.jpg', img[..., ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    (img_dir / name).write_bytes(buf.tobytes())
    images.append(dict(id=image_id, file_name=name, height=size, width=size))
    for cat, poly in objs:
      x0, y0 = poly.min(0)
      x1, y1 = poly.max(0)
      ann_id += 1
      anns.append(dict(
          id=ann_id, image_id=image_id, category_id=cat,
          bbox=[round(float(x0), 2), round(float(y0), 2),
                round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
          area=round(float(cv2.contourArea(poly.astype(np.float32))), 2),
          iscrowd=0,
          segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]]))
  ann = dict(info=dict(description='detx synthetic shapes', version='1'),
             licenses=[], images=images, annotations=anns,
             categories=CATEGORIES)
  (out / 'annotations').mkdir(exist_ok=True)
  with open(out / 'annotations' / f'instances_{split}2017.json', 'w') as f:
    json.dump(ann, f)
  return ann_id


def generate(out_dir, num_train: int = 320, num_val: int = 64,
             image_size: int = 128, seed: int = 0) -> Path:
  """Writes the dataset to `out_dir` (which must not exist yet)."""
  out = Path(out_dir).expanduser()
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f'{out} exists and is not empty')
  out.mkdir(parents=True, exist_ok=True)
  last = _split(out, 'train', num_train, image_size, seed, 0, 0)
  _split(out, 'val', num_val, image_size, seed, VAL_ID_OFFSET, last)
  return out


def ensure(data_dir: str = DEFAULT_DIR, **kwargs) -> Path:
  """Generates the dataset at `data_dir` unless it exists; returns the path."""
  out = Path(data_dir or DEFAULT_DIR).expanduser()
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp', dir=out.parent))
  try:
    generate(tmp, **kwargs)
    try:
      os.rename(tmp, out)
    except OSError:
      if not out.exists():  # not a lost race with another process
        raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return out
