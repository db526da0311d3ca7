"""Per-example numpy/OpenCV transforms (the only place they live), one module per
input pipeline (detx/data/pipelines/ batches them):

  yolo.py  Paddle's mid-2019 YoloTrainFeed / YoloEvalFeed: mixup, colour
           distortion, expand, crop, square resize, flip; normalised boxes.
  rcnn.py  Paddle's FasterRCNN / MaskRCNN feeds (also RetinaNet): flip,
           normalise, short side / long side resize, zero-pad into a shape
           bucket; absolute legacy boxes, Mask R-CNN GT crops.

Here: what both share, the ImageNet normalisation and the data.augment levels.
Raw examples carry absolute legacy-pixel xyxy boxes (detx/data/coco.py). Every
random function takes an explicit ``np.random.Generator`` and is otherwise pure.
"""
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize_image(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 (x/255 - ImageNet mean) / std."""
  out = np.subtract(image, MEAN * 255, dtype=np.float32)
  out *= 1 / (STD * 255)
  return out


IMAGE_DTYPES = ('float32', 'uint8')


def check_image_dtype(image_dtype: str) -> str:
  """config data.image_dtype: 'float32' (batches carry normalised images) or 'uint8'
  (resized RGB, normalised by the model: detx.models.inputs)."""
  if image_dtype not in IMAGE_DTYPES:
    raise ValueError(f'data.image_dtype={image_dtype!r}; expected one of {IMAGE_DTYPES}')
  return image_dtype


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


def raw_targets(example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(boxes float32 [n, 4] absolute legacy xyxy, labels int32 [n], is_crowd bool
  [n]) of a raw example; each key is optional (an unannotated image has none)."""
  boxes = np.asarray(example.get('boxes', np.zeros((0, 4))),
                     np.float32).reshape(-1, 4)
  labels = np.asarray(example.get('labels', np.zeros((len(boxes),))),
                      np.int32).reshape(-1)
  crowd = np.asarray(example.get('is_crowd', np.zeros((len(boxes),))),
                     bool).reshape(-1)
  return boxes, labels, crowd
