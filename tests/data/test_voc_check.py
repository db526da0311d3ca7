"""`python -m detx.data.check` on VOC data (data.name='voc'): each defect of a generated
VOCdevkit named with its file on one line, and preparing stops on the same defects."""
import io

import cv2
import numpy as np
import pytest

from detx import config as cfg
from detx.data import DataError, check, loader
from tests.data.test_voc import make_tree


def _config(root, tmp_cache):
  c = cfg.default()
  return cfg.override(c, {'data.name': 'voc', 'data.dir': str(root),
                          'data.cache_dir': str(tmp_cache),
                          'data.train_split': 'voc2007_trainval',
                          'eval.split': 'voc2007_test'})


def _run(c, split='both'):
  out = io.StringIO()
  code = check.run(c, split, out=out)
  return code, out.getvalue()


def test_clean_tree_is_ok(tmp_path, tmp_cache):
  root = make_tree(tmp_path / 'clean', years=('2007',), n=2)
  code, text = _run(_config(root, tmp_cache))
  assert code == 0, text
  assert 'VOC2007/ImageSets/Main/trainval.txt' in text and 'kept: 2 images, 3 boxes' in text
  assert 'dataset usable as configured' in text


DEFECTS = {
    # name: (how to break image 1 of voc2007_trainval, the line the check prints)
    'malformed_xml': (lambda base: (base / 'Annotations/2007_trainval_1.xml').write_text(
        '<annotation><size><width>48</width>'),
        r'malformed XML in annotation file \S*/2007_trainval_1\.xml'),
    'missing_image': (lambda base: (base / 'JPEGImages/2007_trainval_1.jpg').unlink(),
                      r'image file \S*/2007_trainval_1\.jpg \(image id 1\) is missing'),
    'box_outside': (lambda base: _edit(base, '<xmax>30</xmax>', '<xmax>60</xmax>'),
                    r'\S*/2007_trainval_1\.xml: object 0 \(bicycle\) has a box '
                    r'\[3\.0, 3\.0, 60\.0, 21\.0\] outside the 48x40 image'),
    'unknown_class': (lambda base: _edit(base, '<name>bicycle</name>', '<name>unicorn</name>'),
                      r'\S*/2007_trainval_1\.xml: object 0 \(unicorn\) is not a known class'),
    'size_mismatch': (lambda base: cv2.imwrite(str(base / 'JPEGImages/2007_trainval_1.jpg'),
                                               np.zeros((40, 50, 3), np.uint8)),
                      r'image file \S*/2007_trainval_1\.jpg is 50x40 but its annotation says '
                      r'48x40'),
}


def _edit(base, old, new):
  xml = base / 'Annotations/2007_trainval_1.xml'
  text = xml.read_text()
  assert old in text
  xml.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize('defect', sorted(DEFECTS))
def test_each_defect_named_with_its_file(tmp_path, tmp_cache, defect):
  import re
  root = make_tree(tmp_path / defect, years=('2007',), n=2)
  breaker, line = DEFECTS[defect]
  breaker(root / 'VOCdevkit/VOC2007')
  c = _config(root, tmp_cache)
  code, text = _run(c, 'train')
  assert code == 1, text
  hits = [ln for ln in text.splitlines() if re.search(line, ln)]
  assert len(hits) == 1, text
  assert 'verdict: FAIL' in text
  # the other split is untouched; preparing the broken one raises the same message
  assert _run(c, 'val')[0] == 0
  with pytest.raises(DataError, match=line):
    loader.build(c, 'voc2007_trainval')
