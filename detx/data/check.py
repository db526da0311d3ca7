r"""Checks a COCO-format or VOC dataset (data.name='voc') the way a config would read
it, without preparing it.

  python -m detx.data.check --config=configs/yolov3_darknet.py \
      --config.data.dir=/data/coco [--split=train|val|both] [--nodecode]

Per split (``train`` = config.data.train_split, ``val`` = config.eval.split,
``both`` the two; any other value is a split name) it reads the annotation
json (VOC: the split's list files and every XML file, detx/data/voc.py: malformed XML,
unknown class names, boxes outside the image) and every image file directly, with the same checks preparing uses
(detx/data/annotations.py, images.py), and prints what it found and what preparing will do
under the config's bad-data switches (data.bad_boxes, data.exif,
data.bad_images, data.empty_images): each converted / dropped item with its
count and first few file names or annotation ids, every defect that would
stop preparing, then what would be kept: images, boxes, per-class instance
counts, boxes per image, image and box size distributions.

``--nodecode`` reads image headers only (faster; misses truncated files).
Exit code 0 when every split can be prepared as configured, 1 when a defect
would raise.
"""
from __future__ import annotations

import collections
import sys
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from detx.data import annotations, bad_data, images as image_files, loader, voc

# Error kinds (annotations.scan_annotations / images.iter_images) -> (what, way out).
ERROR_KINDS = {
    'bad_box': ('boxes with zero / negative / invalid size or outside the '
                'image', "fix them or set data.bad_boxes='drop'"),
    'unknown_category': ('annotations with an unknown category id',
                         "fix them or set data.bad_boxes='drop'"),
    'bad_xml': ('malformed or incomplete VOC annotation files (or missing ones)',
                'fix or restore them, or remove their ids from the list file'),
    'unknown_image': ('annotations of an image id missing from "images"',
                      'fix the annotation file'),
    'bad_image_size': ('images with a non-positive size in the json',
                       'fix the annotation file'),
    'missing_image': ('missing or unreadable image files',
                      "restore them or set data.bad_images='drop'"),
    'corrupt_image': ('corrupt or truncated images',
                      "replace them or set data.bad_images='drop'"),
    'size_image': ('images whose size differs from the json',
                   'fix the json or the image'),
}
SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO's box area ranges


def resolve_splits(config, split: str) -> list[str]:
  """'train' / 'val' / 'both' (config.data.train_split / config.eval.split)
  or a split name -> split names."""
  train, val = str(config.data.train_split), str(config.eval.split)
  names = {'train': [train], 'val': [val], 'both': [train, val]}.get(
      split, [split])
  return list(dict.fromkeys(names))


def check_split(config, split: str, verify: bool = True) -> dict[str, Any]:
  """Scans one split as `config` would prepare it (nothing is written).

  Returns dict(split, ann_file, options, fatal (a message when the layout or
  json itself is unusable, else None), errors [(kind, message)] that would
  stop preparing, report (bad_data.REPORT_KEYS lists), categories, images (the
  records that would be kept), num_annotations, num_json_images, ok).
  """
  result = dict(split=split, ann_file=None, options=None, fatal=None,
                errors=[], report=bad_data.new_report(), categories=[],
                images=[], num_annotations=0, num_json_images=0, ok=False)
  try:
    result['options'] = options = loader.data_options(config, split)
    data_dir = loader.source_dir(config)
    if config.data.name == 'voc':
      parsed = voc.scan(data_dir, split, options['bad_boxes'])
      img_dir, result['ann_file'] = parsed['img_dir'], '+'.join(parsed['lists'])
    else:
      ann, img_dir = annotations.check_layout(data_dir, split)
      result['ann_file'] = str(ann)
      parsed = annotations.scan_annotations(ann, options['bad_boxes'])
  except (bad_data.DataError, ValueError) as e:
    result['fatal'] = str(e)
    return result
  report = parsed['report']
  errors = list(parsed['errors'])
  result['categories'] = parsed['categories']
  result['num_json_images'] = len(parsed['images'])
  result['num_annotations'] = parsed['num_annotations']
  images = annotations.filter_empty(parsed['images'], options['empty_images'],
                                    report)
  kept = []
  for im, _, _ in image_files.iter_images(images, img_dir, exif=options['exif'],
                                          bad_images=options['bad_images'],
                                          report=report, errors=errors,
                                          verify=verify):
    kept.append(im)
  result.update(errors=errors, report=report, images=kept,
                ok=not errors and bool(kept or not images))
  if images and not kept and not errors:
    result['fatal'] = 'no usable images left'
    result['ok'] = False
  return result


def _first(items, show: int) -> str:
  items = [str(i) for i in items]
  text = ', '.join(items[:show])
  if len(items) > show:
    text += f', ... (+{len(items) - show} more)'
  return text


def _dist(values) -> str:
  v = np.asarray(values, np.float64)
  if not len(v):
    return '-'
  return (f'min {v.min():.0f}, median {np.median(v):.0f}, '
          f'max {v.max():.0f}')


def format_split(result: dict[str, Any], show: int = 5) -> str:
  """The human-readable report of one check_split result."""
  out = [f"== split {result['split']!r}: {result['ann_file'] or ''}"]
  opts = result['options']
  if opts:
    out.append('switches: ' + ' '.join(f'data.{k}={v!r}'
                                       for k, v in opts.items()))
  if result['fatal'] and not result['images']:
    out.append(f"ERROR: {result['fatal']}")
    out.append('verdict: FAIL (the split cannot be prepared)')
    return '\n'.join(out)
  out.append(f"json: {result['num_json_images']} images, "
             f"{result['num_annotations']} annotations, "
             f"{len(result['categories'])} categories")

  report = result['report']
  found = [(k, v) for k, v in report.items() if len(v)]
  out.append('found (and what preparing does):' if found
             else 'found: nothing to convert or drop')
  for key, items in found:
    what = 'ann ids' if key in bad_data.ANNOTATION_KEYS else 'files'
    out.append(f'  {key:<26} {len(items):>6}  {bad_data.REPORT_KEYS[key]}')
    out.append(f'  {"":<26} {"":>6}  {what}: {_first(items, show)}')

  errors = result['errors']
  if errors:
    out.append(f'ERRORS (would stop preparing): {len(errors)}')
    by_kind = collections.defaultdict(list)
    for kind, message in errors:
      by_kind[kind].append(message)
    for kind, messages in by_kind.items():
      what, fix = ERROR_KINDS.get(kind, (kind, ''))
      out.append(f'  {kind:<26} {len(messages):>6}  {what} ({fix})')
      prefix = f"annotation file {result['ann_file']}: "
      for m in messages[:show]:
        out.append(f'      {m[len(prefix):] if m.startswith(prefix) else m}')
      if len(messages) > show:
        out.append(f'      ... (+{len(messages) - show} more)')

  images = result['images']
  cats = result['categories']
  names = {cid: name for cid, name in cats}
  boxes = [o for im in images for o in im['objects']]
  crowd = sum(o['is_crowd'] for o in boxes)
  out.append(f'kept: {len(images)} images, {len(boxes)} boxes '
             f'({crowd} crowd)')
  if images:
    per_image = [len(im['objects']) for im in images]
    worst = images[int(np.argmax(per_image))]
    out.append(f'boxes per image: max {max(per_image)} '
               f'({worst["file_name"]}), mean {np.mean(per_image):.1f}; '
               f'{sum(n == 0 for n in per_image)} images without boxes')
    hs = [im['height'] for im in images]
    ws = [im['width'] for im in images]
    common = collections.Counter(zip(ws, hs)).most_common(3)
    out.append(f'image width: {_dist(ws)}; height: {_dist(hs)}; most '
               'common: ' + ', '.join(f'{w}x{h} ({n})'
                                      for (w, h), n in common))
  if boxes:
    b = np.stack([o['bbox'] for o in boxes]).astype(np.float64)
    bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    area = bw * bh
    out.append(f'box sizes (legacy w x h): small (<32^2) '
               f'{int((area < SMALL).sum())}, medium '
               f'{int(((area >= SMALL) & (area < MEDIUM)).sum())}, large '
               f'{int((area >= MEDIUM).sum())}; width {_dist(bw)}; height '
               f'{_dist(bh)}')
  counts = collections.Counter(o['category_id'] for o in boxes
                               if not o['is_crowd'])
  if cats:
    out.append('instances per class (non-crowd):')
    cells = [f'{names[c][:18]:<18} {counts.get(c, 0):>6}' for c, _ in cats]
    for i in range(0, len(cells), 4):
      out.append('  ' + '   '.join(cells[i:i + 4]))
    empty = [names[c] for c, _ in cats if not counts.get(c)]
    if empty:
      out.append(f'classes without instances: {len(empty)} '
                 f'({_first(empty, show)})')
  if result['ok']:
    out.append('verdict: OK (usable as configured)')
  else:
    reason = (f"{len(errors)} defects would raise" if errors
              else result['fatal'])
    out.append(f'verdict: FAIL ({reason})')
  return '\n'.join(out)


def run(config, split: str = 'both', verify: bool = True, show: int = 5,
        out=None) -> int:
  """Checks and prints each split; returns the exit code (0 usable, 1 a
  defect would raise)."""
  out = out or sys.stdout
  ok = True
  for name in resolve_splits(config, split):
    result = check_split(config, name, verify=verify)
    print(format_split(result, show=show), file=out)
    print(file=out)
    ok = ok and result['ok']
  print('dataset usable as configured' if ok else
        'dataset NOT usable as configured: see the ERRORS above', file=out)
  return 0 if ok else 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  return run(_CONFIG.value, f.split, verify=f.decode, show=f.show)


if __name__ == '__main__':
  # Flags only when run as a program (importing this module, e.g. beside
  # detx.main in one test process, defines none).
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Path to a configs/*.py file.', lock_config=True)
  flags.DEFINE_string(
      'split', 'both', "'train' (data.train_split), 'val' (eval.split), "
      "'both', or a split name.")
  flags.DEFINE_bool(
      'decode', True, 'Decode every image (finds truncated files); '
      '--nodecode reads headers only.')
  flags.DEFINE_integer(
      'show', 5, 'File names / annotation ids / messages listed per item.')
  flags.mark_flags_as_required(['config'])
  app.run(main)
