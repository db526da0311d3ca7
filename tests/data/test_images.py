"""Image files: decoding every odd encoding to uint8 RGB, EXIF orientation,
and missing / mismatched files named in one DataError."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from detx.data import DataError, images
from tests.data.helpers import build, edit_json

# pycocotools' own numpy-2 deprecation, not ours.
pytestmark = pytest.mark.filterwarnings(
    'ignore::DeprecationWarning:pycocotools.*')


def test_missing_image(data_config, broken):
  name = sorted((broken / 'val2017').iterdir())[3]
  name.unlink()
  with pytest.raises(DataError, match=f'{name}.*missing'):
    build(data_config, broken)


def test_image_size_mismatch(data_config, broken):
  def wrong(ann):
    ann['images'][0]['width'] = 65
  ann = edit_json(broken, wrong)
  with pytest.raises(DataError, match=ann['images'][0]['file_name']):
    build(data_config, broken)


def test_decode_image_conversions():
  """decode_image alone (predict's reader) converts every odd encoding."""
  rgb = (np.random.default_rng(0).random((6, 9, 3)) * 255).astype(np.uint8)
  gray = rgb[..., 0]

  def png(array, mode=None):
    b = io.BytesIO()
    Image.fromarray(array, mode).save(b, 'PNG')
    return b.getvalue()

  cases = {
      'gray png': (png(gray), np.repeat(gray[..., None], 3, 2)),
      'gray+alpha': (png(np.dstack([gray, gray]), 'LA'),
                     np.repeat(gray[..., None], 3, 2)),
      'rgba': (png(np.dstack([rgb, gray]), 'RGBA'), rgb),
      '16-bit gray': (cv2.imencode('.png', gray.astype(np.uint16) * 257)[1]
                      .tobytes(), np.repeat(gray[..., None], 3, 2)),
      '16-bit rgba': (cv2.imencode('.png', np.dstack(
          [rgb[..., ::-1], gray]).astype(np.uint16) * 257)[1].tobytes(), rgb),
  }
  for name, (data, want) in cases.items():
    got = images.decode_image(data, name)
    assert got.dtype == np.uint8 and got.shape == (6, 9, 3), name
    np.testing.assert_array_equal(got, want, err_msg=name)
    notes = images.inspect_image(data, name)['notes']
    assert 'converted_png' in notes, name
  assert 'converted_16bit' in images.inspect_image(cases['16-bit rgba'][0],
                                                 'x')['notes']
  with pytest.raises(DataError, match='cannot decode image junk'):
    images.decode_image(b'junk', 'junk')


def test_orientations_match_pil():
  a = (np.random.default_rng(1).random((5, 7, 3)) * 255).astype(np.uint8)
  for o in range(1, 9):
    pil = Image.fromarray(a)
    exif = pil.getexif()
    exif[0x0112] = o
    b = io.BytesIO()
    pil.save(b, 'PNG', exif=exif.tobytes())
    assert images.inspect_image(b.getvalue(), 'x')['orientation'] == o
    from PIL import ImageOps
    want = np.asarray(ImageOps.exif_transpose(Image.open(b)))
    got = images.orient_array(a, o)
    np.testing.assert_array_equal(got, want, err_msg=str(o))
    # Pixel (x=2, y=3) lands where orient_points says (legacy indices).
    x, y = images.orient_points([[2, 3]], o, 5, 7, legacy=True)[0].astype(int)
    np.testing.assert_array_equal(got[y, x], a[3, 2])
    # A legacy box covering exactly that pixel's block maps onto it.
    box = images.orient_box([1, 2, 3, 4], o, 5, 7)
    block = got[int(box[1]):int(box[3]) + 1, int(box[0]):int(box[2]) + 1]
    assert sorted(block.reshape(-1).tolist()) == sorted(
        a[2:5, 1:4].reshape(-1).tolist())
    # RLE masks follow their image.
    from pycocotools import mask as mask_util
    m = (a[..., 0] > 128).astype(np.uint8)
    rle = mask_util.encode(np.asfortranarray(m))
    rle = {'size': rle['size'], 'counts': rle['counts'].decode()}
    out = images.orient_segmentation(rle, o, 5, 7)
    np.testing.assert_array_equal(
        mask_util.decode(dict(out, counts=out['counts'].encode())),
        images.orient_array(m, o))
