r"""A tensorflow-datasets builder for the Pascal VOC layout (VOC2007, VOC2012 or any
VOC-format dataset), prepared to array_record and read like COCO (detx/data/coco.py).

Layout read (``DIR`` is ``config.data.dir``, the parent of ``VOCdevkit/``)::

    DIR/VOCdevkit/VOC2007/Annotations/<id>.xml
    DIR/VOCdevkit/VOC2007/JPEGImages/<filename from the xml>
    DIR/VOCdevkit/VOC2007/ImageSets/Main/<list>.txt     (one <id> per line)

Split names: ``<folder>_<list>`` joined by ``+``, e.g.
``voc2007_trainval+voc2012_trainval`` (the folder VOCdevkit/VOC2007 matched without
case, the list ImageSets/Main/trainval.txt). ``train`` is the zoo's training set,
``voc2007_trainval+voc2012_trainval``; ``val`` and ``test`` its evaluation set,
``voc2007_test`` (PaddleDetection's VOC_all train.txt / val.txt).

Classes: Paddle's default label list, the 20 VOC classes in alphabetical order
(``VOC_CLASSES``), unless the dataset has its own, one name a line, in
``DIR/label_list.txt`` or ``VOCdevkit/<first folder>/ImageSets/Main/label_list.txt``
(Paddle's place for ``use_default_label: false``).

Boxes as Paddle's voc_loader reads them: [xmin, ymin, xmax, ymax] as written (VOC's
1-based inclusive pixels, no shift), clipped to [0, W-1] / [0, H-1]. Stored per
image like COCO (coco.py), plus ``objects/difficult``; ``is_crowd`` is False,
``category_id`` is label + 1, ``id`` counts objects over the split, image ids count
images in list order (0, 1, ...), ``file_name`` is relative to ``VOCdevkit/``.

Bad data as COCO's (bad_data.py): a missing list or annotation file, malformed XML, an
unknown class name, a box with non-positive size or beyond the image (``data.
bad_boxes``), a missing image (``data.bad_images``) and a size in the XML that
disagrees with the image each name their file.
"""
from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from detx.data import coco
from detx.data.annotations import _raise_first
from detx.data.bad_data import DataError, check_options, new_report

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
DEFAULT_SPLITS = {'train': 'voc2007_trainval+voc2012_trainval',
                  'val': 'voc2007_test', 'test': 'voc2007_test'}
LABELS_FILE = 'label_list.txt'
VERSION = '1.0.0'


def parse_split(split: str) -> list[tuple[str, str]]:
  """'voc2007_trainval+voc2012_trainval' -> [('voc2007', 'trainval'), ...]."""
  split = DEFAULT_SPLITS.get(split, split)
  parts = []
  for part in split.split('+'):
    folder, sep, name = part.strip().partition('_')
    if not sep or not folder or not name:
      raise DataError(f'VOC split {split!r}: each part must be <folder>_<list> (e.g. '
                      f"'voc2007_trainval+voc2012_trainval'), got {part!r}")
    parts.append((folder, name))
  return parts


def _devkit(data_dir) -> Path:
  data_dir = Path(data_dir).expanduser()
  devkit = data_dir / 'VOCdevkit'
  if not devkit.is_dir():
    raise DataError(f'{devkit} is missing: data.dir must be the parent of VOCdevkit/ '
                    '(VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main})')
  return devkit


def layout(data_dir, split: str) -> tuple[Path, list[tuple[Path, Path]]]:
  """(VOCdevkit dir, [(year folder, list file)]) of a split; DataError when missing."""
  devkit = _devkit(data_dir)
  folders = {p.name.lower(): p for p in devkit.iterdir() if p.is_dir()}
  out = []
  for folder, name in parse_split(split):
    root = folders.get(folder.lower())
    if root is None:
      raise DataError(f'VOC split {split!r}: no folder {devkit}/{folder.upper()} '
                      f'(found: {", ".join(sorted(p.name for p in folders.values()))}); '
                      "name the splits there, e.g. --config.data.train_split="
                      "'voc2007_trainval'")
    listed = root / 'ImageSets' / 'Main' / f'{name}.txt'
    if not listed.is_file():
      raise DataError(f'VOC split {split!r}: list file {listed} is missing')
    out.append((root, listed))
  return devkit, out


def class_names(data_dir, split: str) -> tuple[list[str], str]:
  """(class names, the labels file or '' for the 20 VOC classes)."""
  devkit, parts = layout(data_dir, split)
  for path in (devkit.parent / LABELS_FILE,
               parts[0][0] / 'ImageSets' / 'Main' / LABELS_FILE):
    if path.is_file():
      names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
      if not names or len(set(names)) != len(names):
        raise DataError(f'labels file {path}: expected distinct class names, one a line')
      return names, str(path)
  return list(VOC_CLASSES), ''


def _text(node, tag: str, where: str) -> str:
  child = node.find(tag)
  if child is None or child.text is None:
    raise DataError(f'{where}: missing <{tag}>')
  return child.text.strip()


def read_xml(path) -> dict:
  """One VOC annotation file -> dict(filename, width, height, objects=[dict(name,
  bbox [xmin, ymin, xmax, ymax] as written, difficult, truncated, pose)]).
  Raises DataError naming the file for malformed XML or a missing field."""
  path = Path(path)
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise DataError(f'malformed XML in annotation file {path}: {e}') from None
  except OSError as e:
    raise DataError(f'annotation file {path} is missing or unreadable: {e.strerror}'
                    ) from None
  where = f'annotation file {path}'
  size = root.find('size')
  if size is None:
    raise DataError(f'{where}: missing <size>')
  try:
    out = dict(filename=(root.findtext('filename') or f'{path.stem}.jpg').strip(),
               width=int(float(_text(size, 'width', where))),
               height=int(float(_text(size, 'height', where))), objects=[])
    for obj in root.findall('object'):
      box = obj.find('bndbox')
      if box is None:
        raise DataError(f'{where}: an <object> without <bndbox>')
      out['objects'].append(dict(
          name=_text(obj, 'name', where),
          bbox=[float(_text(box, k, where)) for k in ('xmin', 'ymin', 'xmax', 'ymax')],
          difficult=bool(int(obj.findtext('difficult') or 0)),
          truncated=bool(int(obj.findtext('truncated') or 0)),
          pose=(obj.findtext('pose') or '').strip()))
  except ValueError as e:
    raise DataError(f'{where}: a non-numeric field ({e})') from None
  return out


def _box_problem(bbox, width: int, height: int) -> str | None:
  x1, y1, x2, y2 = bbox
  if not all(np.isfinite(bbox)) or x2 < x1 or y2 < y1:
    return f'has a box of non-positive size {bbox}'
  if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
    return f'has a box {bbox} outside the {width}x{height} image'
  return None


def scan(data_dir, split: str, bad_boxes: str = 'error') -> dict:
  """Reads and checks every annotation file of a split (no image access), collecting
  problems as check.py does for COCO: dict(categories [(id, name)], images [records
  as annotations.scan_annotations], report, errors [(kind, message)], num_annotations,
  img_dir (VOCdevkit), lists [list files], labels_file)."""
  check_options(bad_boxes=bad_boxes)
  devkit, parts = layout(data_dir, split)
  names, labels_file = class_names(data_dir, split)
  index = {n: i for i, n in enumerate(names)}
  report, errors, images, count = new_report(), [], [], 0
  for root, listed in parts:
    ids = [line.split()[0] for line in listed.read_text().splitlines() if line.strip()]
    for stem in ids:
      xml = root / 'Annotations' / f'{stem}.xml'
      try:
        ann = read_xml(xml)
      except DataError as e:
        errors.append(('bad_xml', str(e)))
        continue
      rec = dict(id=len(images), file_name=f'{root.name}/JPEGImages/{ann["filename"]}',
                 height=ann['height'], width=ann['width'], objects=[])
      if rec['height'] <= 0 or rec['width'] <= 0:
        errors.append(('bad_image_size', f'annotation file {xml}: size '
                       f'{rec["width"]}x{rec["height"]}'))
        continue
      for k, obj in enumerate(ann['objects']):
        count += 1
        what = f'annotation file {xml}: object {k} ({obj["name"]})'
        if obj['name'] not in index:
          if bad_boxes == 'drop':
            report['dropped_unknown_category'].append(f'{xml.name}#{k}')
          else:
            errors.append(('unknown_category', f'{what} is not a known class (' +
                           (f'labels file {labels_file}' if labels_file else
                            'the 20 VOC classes; a dataset of its own lists them in '
                            f'DIR/{LABELS_FILE}') + ')'))
          continue
        problem = _box_problem(obj['bbox'], rec['width'], rec['height'])
        if problem:
          if bad_boxes == 'drop':
            report['dropped_boxes'].append(f'{xml.name}#{k}')
          else:
            errors.append(('bad_box', f"{what} {problem}. Fix the annotation or set "
                           "data.bad_boxes='drop'"))
          continue
        x1, y1, x2, y2 = obj['bbox']
        box = [x1, y1, min(x2, rec['width'] - 1.0), min(y2, rec['height'] - 1.0)]
        if box != obj['bbox']:
          report['clipped_boxes'].append(f'{xml.name}#{k}')
        label = index[obj['name']]
        rec['objects'].append(dict(
            bbox=np.asarray(box, np.float32), label=label, category_id=label + 1,
            is_crowd=False, difficult=obj['difficult'], id=count - 1,
            area=float((box[2] - box[0] + 1) * (box[3] - box[1] + 1)), segmentation='[]'))
      images.append(rec)
  return dict(categories=[(i + 1, n) for i, n in enumerate(names)], images=images,
              report=report, errors=errors, num_annotations=count, img_dir=devkit,
              lists=[str(p) for _, p in parts], labels_file=labels_file)


class VocConfig(coco.CocoConfig):
  """One VOCdevkit parent directory and split (`voc_split`; tfds' split is 'data':
  a name like 'voc2007_trainval+voc2012_trainval' would read as split arithmetic)."""

  def __init__(self, *, voc_split: str, **kwargs):
    super().__init__(split='data', **kwargs)
    self.voc_split = voc_split


class DetxVoc(coco.DetxCoco, skip_registration=True):
  """VOCdevkit split -> array_record (see module docstring); the COCO builder's
  features plus objects/difficult."""

  RELEASE_NOTES = {VERSION: 'First version.'}
  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = []
  OBJECT_EXTRAS = {'difficult': np.bool_}

  def _read(self):
    cfg = self.builder_config
    parsed = scan(cfg.source_dir, cfg.voc_split, cfg.bad_boxes)
    _raise_first(parsed['errors'])
    return parsed, parsed['img_dir'], '+'.join(parsed['lists'])


def _fingerprint(source_dir: Path, split: str, options: dict) -> str:
  """Changes with the split, the options, and the size / mtime of each list file, each
  listed XML file (an edit in place leaves the directory's mtime alone) and the labels
  file."""
  devkit, parts = layout(source_dir, split)
  stats = []
  for root, listed in parts:
    stats.append((str(listed), listed.stat().st_size, listed.stat().st_mtime_ns))
    xml_stats = []
    for stem in listed.read_text().split():
      try:
        st = (root / 'Annotations' / f'{stem}.xml').stat()
        xml_stats.append((st.st_size, st.st_mtime_ns))
      except OSError:
        xml_stats.append(None)
    stats.append(hashlib.sha1(json.dumps(xml_stats).encode()).hexdigest())
  for p in (devkit.parent / LABELS_FILE, parts[0][0] / 'ImageSets' / 'Main' / LABELS_FILE):
    if p.is_file():
      stats.append((str(p), p.stat().st_mtime_ns))
  key = json.dumps([VERSION, str(source_dir), split, stats, sorted(options.items())])
  return hashlib.sha1(key.encode()).hexdigest()[:16]


def make_builder(source_dir, split: str, cache_dir: str = '', bad_boxes: str = 'error',
                 **options) -> DetxVoc:
  """The builder of `source_dir`'s VOC `split` (validates the layout)."""
  source_dir = Path(source_dir).expanduser().resolve()
  options = check_options(bad_boxes=bad_boxes, **options)
  name = 'voc_' + _fingerprint(source_dir, split, options)
  config = VocConfig(name=name, version=VERSION, source_dir=str(source_dir), voc_split=split,
                     **options, description=f'{source_dir} {split}')
  with coco._quiet():  # pylint: disable=protected-access
    return DetxVoc(config=config, data_dir=str(coco.cache_root(cache_dir)),
                   file_format='array_record')


def prepare(source_dir, split: str, cache_dir: str = '', bad_boxes: str = 'error',
            **options) -> DetxVoc:
  """A prepared builder (coco.prepare's file lock and tfds flow)."""
  return coco.prepare(source_dir, split, cache_dir, bad_boxes, make=make_builder,
                      **options)
