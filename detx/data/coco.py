"""A tensorflow-datasets builder for any COCO-format directory.

Layout read (``DIR`` is ``config.data.dir``, ``SPLIT`` e.g. ``train`` / ``val``)::

    DIR/annotations/instances_{SPLIT}2017.json
    DIR/{SPLIT}2017/<file_name>.jpg

The split is prepared once into ``array_record`` files under a cache directory
(the source directory may be read-only) and read back with
``builder.as_data_source()``, which needs no TensorFlow: images are stored as
the original encoded bytes and decoded here with OpenCV.

One builder config per (source directory, split): its name carries a hash of
the absolute path, the annotation file's size and mtime and the options, so two
directories (or an edited annotation file) never share prepared data, and
preparing ``val`` never requires preparing ``train``.

Stored per image (records are in ascending image-id order):
  image      the encoded file bytes (decoded by :func:`decode_image`)
  image_id   int64;  height, width: int32 (from the json);  file_name: text
  objects    sequence of
    bbox        float32 [4] absolute legacy pixel xyxy: x2 = x1 + w - 1,
                clipped to [0, W-1] / [0, H-1] (Paddle's coco_loader)
    label       int64 contiguous class id 0..C-1 (sorted category-id order)
    category_id int64 original COCO category id
    is_crowd    bool;  area: float32;  id: int64 annotation id
    segmentation  text: the raw json of the polygons or RLE
Dataset metadata (``builder.info.metadata``): ``category_ids``,
``category_names``, ``image_ids``, ``annotation_file``, ``source_dir``.

Every problem found while preparing raises one :class:`DataError` naming the
file / record; tfds writes into a temporary directory and renames it only on
success, so a failed prepare leaves nothing a later run would pick up.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils
from PIL import Image as PILImage

VERSION = '1.0.0'
DEFAULT_CACHE_DIR = '~/.cache/detx/tfds'
BAD_BOXES = ('error', 'drop')


class DataError(ValueError):
  """A dataset on disk is missing, malformed or inconsistent."""


def layout(data_dir, split: str) -> tuple[Path, Path]:
  """(annotation json, image directory) of a COCO-format split."""
  data_dir = Path(data_dir)
  return (data_dir / 'annotations' / f'instances_{split}2017.json',
          data_dir / f'{split}2017')


def _expected(data_dir, split):
  ann, img = layout(data_dir, split)
  return f'expected the COCO layout {ann} and {img}/*.jpg'


def check_layout(data_dir, split: str) -> tuple[Path, Path]:
  """Raises DataError unless the split's annotation file and image dir exist."""
  data_dir = Path(data_dir).expanduser()
  ann, img = layout(data_dir, split)
  if not data_dir.is_dir():
    raise DataError(f'data dir {data_dir} does not exist: '
                    f'{_expected(data_dir, split)}')
  if not ann.is_file():
    raise DataError(f'annotation file {ann} is missing: '
                    f'{_expected(data_dir, split)}')
  if not img.is_dir():
    raise DataError(f'image directory {img} is missing: '
                    f'{_expected(data_dir, split)}')
  return ann, img


def decode_image(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """Encoded image bytes -> uint8 RGB [H, W, 3] (EXIF orientation ignored,
  as COCO's annotations are in the stored pixel orientation)."""
  buf = np.frombuffer(data, np.uint8)
  im = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if im is None:
    raise DataError(f'cannot decode image {name}')
  return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def verify_image(data: bytes, path) -> tuple[int, int]:
  """Fully decodes (at 1/8 scale for JPEG: fast, still reads every byte) and
  returns (height, width); raises DataError naming `path` if corrupt/truncated."""
  try:
    with PILImage.open(io.BytesIO(data)) as im:
      w, h = im.size
      if im.format == 'JPEG':
        im.draft('RGB', (max(1, w // 8), max(1, h // 8)))
      im.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
    raise DataError(f'corrupt or truncated image {path}: {e}') from None
  return h, w


def convert_box(bbox, width: int, height: int) -> list[float]:
  """COCO [x, y, w, h] -> legacy pixel [x1, y1, x2, y2] (Paddle coco_loader)."""
  x, y, w, h = (float(v) for v in bbox)
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  return [x1, y1, x2, y2]


def _load_json(path: Path) -> dict:
  try:
    with open(path, 'rb') as f:
      d = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f'malformed JSON in annotation file {path}: {e}') from None
  except OSError as e:
    raise DataError(f'cannot read annotation file {path}: {e}') from None
  if not isinstance(d, dict):
    raise DataError(f'annotation file {path}: expected a JSON object with '
                    '"images", "annotations" and "categories"')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(d.get(key), list):
      raise DataError(f'annotation file {path}: missing or invalid "{key}" '
                      'list')
  return d


def parse_annotations(ann_file, bad_boxes: str = 'error') -> dict[str, Any]:
  """Reads and validates a COCO json (no image access).

  Returns dict(categories=[(id, name)...] sorted by id,
               images=[dict(id, file_name, height, width, objects=[...])]
               sorted by image id).
  """
  ann_file = Path(ann_file)
  if bad_boxes not in BAD_BOXES:
    raise ValueError(f'data.bad_boxes must be one of {BAD_BOXES}, '
                     f'got {bad_boxes!r}')
  d = _load_json(ann_file)
  where = f'annotation file {ann_file}'
  try:
    cats = sorted((int(c['id']), str(c['name'])) for c in d['categories'])
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f'{where}: invalid category entry ({e!r})') from None
  if len({c for c, _ in cats}) != len(cats):
    raise DataError(f'{where}: duplicate category ids')
  cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
  images = {}
  for im in d['images']:
    try:
      rec = dict(id=int(im['id']), file_name=str(im['file_name']),
                 height=int(im['height']), width=int(im['width']), objects=[])
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f'{where}: invalid image entry {im!r:.200} ({e!r})'
                      ) from None
    if rec['id'] in images:
      raise DataError(f'{where}: duplicate image id {rec["id"]}')
    if rec['height'] <= 0 or rec['width'] <= 0:
      raise DataError(f'{where}: image id {rec["id"]} ({rec["file_name"]}) '
                      f'has size {rec["width"]}x{rec["height"]}')
    images[rec['id']] = rec
  for a in d['annotations']:
    try:
      aid = int(a['id'])
      image_id = int(a['image_id'])
      cat = int(a['category_id'])
      bbox = [float(v) for v in a['bbox']]
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f'{where}: invalid annotation {a!r:.200} ({e!r})'
                      ) from None
    if image_id not in images:
      raise DataError(f'{where}: annotation id {aid} refers to unknown image '
                      f'id {image_id}')
    im = images[image_id]
    if cat not in cat_index:
      raise DataError(f'{where}: annotation id {aid} (image '
                      f'{im["file_name"]}) has unknown category id {cat}')
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
      raise DataError(f'{where}: annotation id {aid} (image '
                      f'{im["file_name"]}) has an invalid bbox {bbox}')
    if bbox[2] <= 0 or bbox[3] <= 0:
      if bad_boxes == 'drop':
        continue
      raise DataError(
          f'{where}: annotation id {aid} (image {im["file_name"]}) has a '
          f'non-positive width/height: bbox {bbox}. Fix the annotation or set '
          "data.bad_boxes='drop'")
    seg = a.get('segmentation', [])
    im['objects'].append(dict(
        bbox=np.asarray(convert_box(bbox, im['width'], im['height']),
                        np.float32),
        label=cat_index[cat], category_id=cat,
        is_crowd=bool(a.get('iscrowd', 0)),
        area=float(a.get('area', bbox[2] * bbox[3])), id=aid,
        segmentation=json.dumps(seg, separators=(',', ':'))))
  return dict(categories=cats,
              images=[images[k] for k in sorted(images)])


def _fingerprint(source_dir: Path, split: str, bad_boxes: str) -> str:
  ann, _ = layout(source_dir, split)
  st = ann.stat()
  key = json.dumps([VERSION, str(source_dir), split, st.st_size,
                    st.st_mtime_ns, bad_boxes])
  return hashlib.sha1(key.encode()).hexdigest()[:16]


class CocoConfig(tfds.core.BuilderConfig):
  """One COCO-format source directory and split."""

  def __init__(self, *, source_dir: str, split: str, bad_boxes: str = 'error',
               **kwargs):
    super().__init__(**kwargs)
    self.source_dir = source_dir
    self.split = split
    self.bad_boxes = bad_boxes


class DetxCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """COCO-format directory -> array_record (see module docstring)."""

  RELEASE_NOTES = {VERSION: 'First version.'}
  VERSION = tfds.core.Version(VERSION)
  # Configs are created per source directory by `make_builder`.
  BUILDER_CONFIGS = []

  # tfds' default probes `importlib_resources` (not installed on Python>=3.9)
  # for builders that live in a package; the path is this file.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='A COCO-format detection dataset (detx).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3),
                                         encoding_format='jpeg'),
            'image_id': np.int64,
            'height': np.int32,
            'width': np.int32,
            'file_name': tfds.features.Text(),
            'objects': tfds.features.Sequence({
                'bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
                'label': np.int64,
                'category_id': np.int64,
                'is_crowd': np.bool_,
                'area': np.float32,
                'id': np.int64,
                'segmentation': tfds.features.Text(),
            }),
        }),
        metadata=tfds.core.MetadataDict(),
        # Keep records in generation (= ascending image id) order.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    ann, img_dir = check_layout(cfg.source_dir, cfg.split)
    parsed = parse_annotations(ann, cfg.bad_boxes)
    md = self.info.metadata
    md['category_ids'] = [c for c, _ in parsed['categories']]
    md['category_names'] = [n for _, n in parsed['categories']]
    md['image_ids'] = [im['id'] for im in parsed['images']]
    md['annotation_file'] = str(ann)
    md['source_dir'] = str(cfg.source_dir)
    return {cfg.split: self._generate_examples(parsed['images'], img_dir)}

  def _generate_examples(self, images, img_dir: Path):
    for im in images:
      path = img_dir / im['file_name']
      try:
        data = path.read_bytes()
      except OSError as e:
        raise DataError(f'image file {path} (image id {im["id"]}) is missing '
                        f'or unreadable: {e.strerror}') from None
      h, w = verify_image(data, path)
      if (h, w) != (im['height'], im['width']):
        raise DataError(f'image file {path} is {w}x{h} but its annotation '
                        f'says {im["width"]}x{im["height"]}')
      objs = im['objects']
      yield im['id'], {
          'image': data,
          'image_id': im['id'],
          'height': im['height'],
          'width': im['width'],
          'file_name': im['file_name'],
          'objects': {
              'bbox': np.stack([o['bbox'] for o in objs]).astype(np.float32)
                      if objs else np.zeros((0, 4), np.float32),
              'label': np.array([o['label'] for o in objs], np.int64),
              'category_id': np.array([o['category_id'] for o in objs],
                                      np.int64),
              'is_crowd': np.array([o['is_crowd'] for o in objs], np.bool_),
              'area': np.array([o['area'] for o in objs], np.float32),
              'id': np.array([o['id'] for o in objs], np.int64),
              'segmentation': [o['segmentation'] for o in objs],
          },
      }


def cache_root(cache_dir: str = '') -> Path:
  return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()


def make_builder(source_dir, split: str, cache_dir: str = '',
                 bad_boxes: str = 'error') -> DetxCoco:
  """The builder for `source_dir`'s `split` (validates the layout)."""
  source_dir = Path(source_dir).expanduser().resolve()
  check_layout(source_dir, split)
  if bad_boxes not in BAD_BOXES:
    raise ValueError(f'data.bad_boxes must be one of {BAD_BOXES}, '
                     f'got {bad_boxes!r}')
  name = f'{split}_{_fingerprint(source_dir, split, bad_boxes)}'
  config = CocoConfig(name=name, version=VERSION, source_dir=str(source_dir),
                      split=split, bad_boxes=bad_boxes,
                      description=f'{source_dir} {split}')
  with _quiet():  # tfds warns about every custom (per-directory) config
    return DetxCoco(config=config, data_dir=str(cache_root(cache_dir)),
                    file_format='array_record')


@contextlib.contextmanager
def _quiet(progress: bool = False):
  """Mutes tfds' absl warnings (and progress bars unless `progress`)."""
  level = absl_logging.get_verbosity()
  bars = getattr(tqdm_utils, '_active', True)
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.display_progress_bar(progress)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)
    tfds.display_progress_bar(bars)


@contextlib.contextmanager
def _lock(path: Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(source_dir, split: str, cache_dir: str = '',
            bad_boxes: str = 'error') -> DetxCoco:
  """Returns a prepared builder, preparing it first if needed (process-safe:
  concurrent callers wait on a file lock)."""
  builder = make_builder(source_dir, split, cache_dir, bad_boxes)
  with _quiet():
    done = builder.is_prepared()
  if done:
    return builder
  with _lock(Path(builder.data_dir).parent / '.prepare.lock'):
    builder = make_builder(source_dir, split, cache_dir, bad_boxes)
    with _quiet(progress=sys.stderr.isatty()):
      if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return make_builder(source_dir, split, cache_dir, bad_boxes)


def data_source(builder: DetxCoco):
  """Random-access source of the builder's split; images left encoded."""
  return builder.as_data_source(
      builder.builder_config.split,
      decoders={'image': tfds.decode.SkipDecoding()})


def to_example(record: dict) -> dict[str, Any]:
  """A data-source record -> the raw example dict used by transforms."""
  objs = record['objects']
  name = record['file_name']
  if isinstance(name, bytes):
    name = name.decode()
  segs = [s.decode() if isinstance(s, bytes) else str(s)
          for s in objs['segmentation']]
  return {
      'image': decode_image(record['image'], name),
      'image_id': np.int64(record['image_id']),
      'height': int(record['height']),
      'width': int(record['width']),
      'file_name': name,
      'boxes': np.asarray(objs['bbox'], np.float32).reshape(-1, 4),
      'labels': np.asarray(objs['label'], np.int32).reshape(-1),
      'category_ids': np.asarray(objs['category_id'], np.int64).reshape(-1),
      'is_crowd': np.asarray(objs['is_crowd'], bool).reshape(-1),
      'area': np.asarray(objs['area'], np.float32).reshape(-1),
      'ann_ids': np.asarray(objs['id'], np.int64).reshape(-1),
      'segmentation': segs,
  }
