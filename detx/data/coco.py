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

Dataset metadata also holds ``report``: what preparing found and did, one
list per item (file names for images, annotation ids for boxes; see
REPORT_KEYS). ``python -m detx.data.check`` prints the same report without
preparing anything.

Bad data (detx/data/bad_data.py): every record is checked while preparing
(annotations: detx/data/annotations.py, image files: detx/data/images.py); a
defect either raises one DataError naming the file / annotation id, or is
converted or dropped and counted in the report, per the data.bad_boxes,
data.exif, data.bad_images and data.empty_images switches.

tfds writes into a temporary directory and renames it only on success, so a
failed prepare leaves nothing a later run would pick up; a killed one (SIGKILL)
leaves that directory, which the next preparation deletes. Examples pass through
detx/data/spool.py (one file on disk, not tfds' in-memory shuffle buffer).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils

from detx.data.annotations import check_layout, filter_empty, layout, parse_annotations
from detx.data.bad_data import DataError, check_options, summarize
from detx.data.images import apply_orientation, decode_image, iter_images
from detx.data import spool

VERSION = '1.1.0'
# (height, width) of every record, int32 [N, 2] in record order, written beside the
# records while preparing (loader.Dataset.image_sizes; reading them back from the
# records took 14 s for 5k 640x480 images).
SIZES_FILE = 'detx_image_sizes.npy'
DEFAULT_CACHE_DIR = '~/.cache/detx/tfds'


def _fingerprint(source_dir: Path, split: str, bad_boxes: str,
                 options: dict | None = None) -> str:
  ann, _ = layout(source_dir, split)
  st = ann.stat()
  options = check_options(bad_boxes=bad_boxes, **(options or {}))
  key = json.dumps([VERSION, str(source_dir), split, st.st_size,
                    st.st_mtime_ns, sorted(options.items())])
  return hashlib.sha1(key.encode()).hexdigest()[:16]


class CocoConfig(tfds.core.BuilderConfig):
  """One COCO-format source directory and split."""

  def __init__(self, *, source_dir: str, split: str, bad_boxes: str = 'error',
               exif: str = 'ignore', bad_images: str = 'error',
               empty_images: str = 'keep', **kwargs):
    super().__init__(**kwargs)
    self.source_dir = source_dir
    self.split = split
    self.bad_boxes = bad_boxes
    self.exif = exif
    self.bad_images = bad_images
    self.empty_images = empty_images


class DetxCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """COCO-format directory -> array_record (see module docstring)."""

  RELEASE_NOTES = {
      '1.0.0': 'First version.',
      VERSION: 'Bad-data options (exif, bad_images, empty_images), images '
               'converted to RGB, a report in the metadata.',
  }
  VERSION = tfds.core.Version(VERSION)
  # Configs are created per source directory by `make_builder`.
  BUILDER_CONFIGS = []
  # Per-object features a subclass adds (name -> dtype; VOC: difficult).
  OBJECT_EXTRAS: dict = {}

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
                **self.OBJECT_EXTRAS,
            }),
        }),
        metadata=tfds.core.MetadataDict(),
        # Keep records in generation (= ascending image id) order.
        disable_shuffling=True,
    )

  def _read(self):
    """(parsed annotations as parse_annotations returns them, image directory,
    annotation file) of the config's split; the VOC builder reads XML instead."""
    cfg = self.builder_config
    ann, img_dir = check_layout(cfg.source_dir, cfg.split)
    return parse_annotations(ann, cfg.bad_boxes), img_dir, str(ann)

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    parsed, img_dir, ann = self._read()
    report = parsed['report']
    images = filter_empty(parsed['images'], cfg.empty_images, report)
    md = self.info.metadata
    md['category_ids'] = [c for c, _ in parsed['categories']]
    md['category_names'] = [n for _, n in parsed['categories']]
    md['image_ids'] = [im['id'] for im in images]  # final: after generation
    md['annotation_file'] = ann
    md['source_dir'] = str(cfg.source_dir)
    md['report'] = report
    return {cfg.split: self._generate_examples(images, img_dir, report)}

  def _generate_examples(self, images, img_dir: Path, report):
    cfg = self.builder_config
    kept = []
    for im, data, info in iter_images(images, img_dir, exif=cfg.exif,
                                      bad_images=cfg.bad_images,
                                      report=report):
      if cfg.exif == 'apply' and info['orientation'] != 1:
        data, im = apply_orientation(data, im, info['orientation'],
                                     str(img_dir / im['file_name']))
      kept.append((im['id'], im['height'], im['width']))
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
              **{k: np.array([o[k] for o in objs], dtype)
                 for k, dtype in self.OBJECT_EXTRAS.items()},
          },
      }
    # tfds writes the metadata after the last example.
    md = self.info.metadata
    kept.sort()
    md['image_ids'] = [i for i, _, _ in kept]
    md['report'] = report
    np.save(Path(self.data_dir) / SIZES_FILE,
            np.array([hw for _, *hw in kept], np.int32).reshape(-1, 2))
    if images and not kept:
      raise DataError(f'no usable images left in {img_dir} '
                      f'({summarize(report)})')


def cache_root(cache_dir: str = '') -> Path:
  return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()


def make_builder(source_dir, split: str, cache_dir: str = '',
                 bad_boxes: str = 'error', *, exif: str = 'ignore',
                 bad_images: str = 'error', empty_images: str = 'keep'
                 ) -> DetxCoco:
  """The builder for `source_dir`'s `split` (validates the layout)."""
  source_dir = Path(source_dir).expanduser().resolve()
  check_layout(source_dir, split)
  options = dict(exif=exif, bad_images=bad_images, empty_images=empty_images)
  check_options(bad_boxes=bad_boxes, **options)
  name = f'{split}_{_fingerprint(source_dir, split, bad_boxes, options)}'
  config = CocoConfig(name=name, version=VERSION, source_dir=str(source_dir),
                      split=split, bad_boxes=bad_boxes, **options,
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
            bad_boxes: str = 'error', *, exif: str = 'ignore',
            bad_images: str = 'error', empty_images: str = 'keep',
            make=None) -> DetxCoco:
  """Returns a prepared builder, preparing it first if needed (process-safe:
  concurrent callers wait on a file lock). The options are the bad-data
  switches of the module docstring; what they did is
  ``builder.info.metadata['report']``. `make`: the builder factory
  (make_builder's signature; voc.make_builder for VOC)."""
  make = make or make_builder
  options = dict(exif=exif, bad_images=bad_images, empty_images=empty_images)
  builder = make(source_dir, split, cache_dir, bad_boxes, **options)
  with _quiet():
    done = builder.is_prepared()
  if done:
    return builder
  with _lock(Path(builder.data_dir).parent / '.prepare.lock'):
    builder = make(source_dir, split, cache_dir, bad_boxes, **options)
    # Constant memory whatever the split's size; a killed earlier run's temporary
    # directory is removed, never read (detx/data/spool.py).
    with _quiet(progress=sys.stderr.isatty()), spool.ordered_writes():
      if not builder.is_prepared():
        spool.remove_incomplete(builder.data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return make(source_dir, split, cache_dir, bad_boxes, **options)


def data_source(builder: DetxCoco):
  """Random-access source of the builder's split; images left encoded."""
  return builder.as_data_source(
      builder.builder_config.split,
      decoders={'image': tfds.decode.SkipDecoding()})


def to_example(record: dict, decode: bool = True) -> dict[str, Any]:
  """A data-source record -> the raw example dict used by transforms (image None
  unless `decode`). `difficult`: VOC's flag, COCO's is_crowd."""
  objs = record['objects']
  name = record['file_name']
  if isinstance(name, bytes):
    name = name.decode()
  segs = [s.decode() if isinstance(s, bytes) else str(s)
          for s in objs['segmentation']]
  return {
      'image': decode_image(record['image'], name) if decode else None,
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
      'difficult': np.asarray(objs.get('difficult', objs['is_crowd']), bool).reshape(-1),
  }