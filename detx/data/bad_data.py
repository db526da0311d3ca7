"""Bad data: the :class:`DataError`, the switches that choose what happens to
each defect, and the report of what preparing converted or dropped.

Bad data: every record is checked while preparing; a defect either raises one
:class:`DataError` naming the file / annotation id, or is converted or dropped
and counted in the report, per these options (``config.data.*``):

  * images that are PNG (or another non-JPEG format), grayscale, CMYK JPEG,
    16-bit (scaled to 8 bits, round(v / 257)), with an alpha channel (dropped,
    not composited) or palette are *converted*: :func:`decode_image` turns
    them into uint8 RGB (OpenCV ``IMREAD_UNCHANGED`` for non-JPEG files);
  * ``exif``: ``'ignore'`` (default): COCO annotations refer to the stored
    pixels, so the EXIF orientation tag is ignored (images carrying one are
    listed in ``exif_ignored``); ``'apply'``: images whose tag is not 1 are
    rotated / flipped to their displayed orientation (stored re-encoded as
    PNG) and their boxes, polygons and RLEs are transformed with them
    (``height`` / ``width`` swap for 90-degree orientations); the json must
    still describe the stored pixels (its width / height are checked against
    the stored size). COCO evaluation scores detections against the json,
    i.e. in the stored frame, so 'apply' is meant for training splits; to
    evaluate such images, re-save them upright and fix the json instead;
  * boxes partly outside the image are clipped (Paddle's coco_loader) and
    listed in ``clipped_boxes``;
  * ``bad_boxes``: ``'error'`` (default) | ``'drop'``: boxes with zero /
    negative / non-finite size, boxes wholly outside the image, and
    annotations with an unknown category id (``dropped_boxes``,
    ``dropped_unknown_category``);
  * ``empty_images``: ``'keep'`` (default) | ``'drop'`` images with no
    annotations (after dropping); :func:`detx.data.loader.build` applies
    'drop' to the train split only: evaluation always sees every image;
  * ``bad_images``: ``'error'`` (default) | ``'drop'`` missing / unreadable
    files and corrupt or truncated images (``dropped_missing_images``,
    ``dropped_corrupt_images``);
  * malformed JSON, unknown image ids, duplicate ids and a size in the json
    that differs from the file's always raise (naming the file and line /
    column, or the id).


The report (stored in the prepared split's metadata, see detx/data/coco.py) has
one list per REPORT_KEYS item: file names for images, annotation ids for boxes
(ANNOTATION_KEYS). ``python -m detx.data.check`` prints the same report without
preparing anything.
"""
from __future__ import annotations

from detx.errors import ConfigError

BAD_BOXES = ('error', 'drop')
EXIF = ('ignore', 'apply')
BAD_IMAGES = ('error', 'drop')
EMPTY_IMAGES = ('keep', 'drop')
# config.data key -> allowed values (the first is the default).
OPTIONS = {'bad_boxes': BAD_BOXES, 'exif': EXIF, 'bad_images': BAD_IMAGES,
           'empty_images': EMPTY_IMAGES}
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}

# The report stored in the metadata: key -> what it lists.
REPORT_KEYS = {
    'converted_png': 'images stored as PNG (decoded to RGB)',
    'converted_format': 'images in another non-JPEG format (decoded to RGB)',
    'converted_grayscale': 'grayscale images (converted to RGB)',
    'converted_cmyk': 'CMYK JPEGs (converted to RGB)',
    'converted_16bit': '16-bit images (scaled to 8 bits)',
    'converted_alpha': 'images with an alpha channel (alpha dropped)',
    'converted_palette': 'palette images (converted to RGB)',
    'exif_rotated': 'images rotated to their EXIF orientation, boxes too '
                    "(data.exif='apply')",
    'exif_ignored': 'images with an EXIF orientation, ignored: annotations '
                    "refer to the stored pixels (data.exif='ignore')",
    'clipped_boxes': 'boxes partly outside the image (clipped)',
    'dropped_boxes': "zero / negative / non-finite size boxes or boxes "
                     "outside the image (dropped: data.bad_boxes='drop')",
    'dropped_unknown_category': "annotations with an unknown category id "
                                "(dropped: data.bad_boxes='drop')",
    'empty_images': 'images with no annotations (kept)',
    'dropped_empty_images': "images with no annotations (dropped: "
                            "data.empty_images='drop')",
    'dropped_missing_images': "missing / unreadable image files (dropped: "
                              "data.bad_images='drop')",
    'dropped_corrupt_images': "corrupt or truncated images (dropped: "
                              "data.bad_images='drop')",
}
# Report keys whose entries are annotation ids (the others: file names).
ANNOTATION_KEYS = ('clipped_boxes', 'dropped_boxes', 'dropped_unknown_category')
CHECK_HINT = 'python -m detx.data.check --config=... lists every defect'


class DataError(ValueError):
  """A dataset on disk is missing, malformed or inconsistent."""


def check_options(**options) -> dict[str, str]:
  """Validates bad-data options (OPTIONS keys); returns all of them, with
  defaults filled in. Raises ValueError naming the config key."""
  out = dict(DEFAULTS)
  for key, value in options.items():
    if key not in OPTIONS:
      raise TypeError(f'unknown data option {key!r}')
    if value not in OPTIONS[key]:
      raise ConfigError(f'data.{key} must be one of {OPTIONS[key]}, '
                       f'got {value!r}')
    out[key] = value
  return out


def new_report() -> dict[str, list]:
  return {k: [] for k in REPORT_KEYS}


def report_counts(report) -> dict[str, int]:
  """{key: count} of the non-empty report items."""
  return {k: len(v) for k, v in report.items() if len(v)}


def summarize(report, limit: int = 3) -> str:
  """One line per non-empty report item: count, key, first few entries."""
  lines = []
  for key, items in report.items():
    items = list(items)
    if not items:
      continue
    first = ', '.join(str(i) for i in items[:limit])
    more = f', ... (+{len(items) - limit})' if len(items) > limit else ''
    lines.append(f'{len(items)} {key}: {first}{more}')
  return '\n'.join(lines)
