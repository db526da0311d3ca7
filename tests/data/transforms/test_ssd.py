"""SSD transforms: RandomDistort (is_order=True) equal to a transcription of Paddle's
operator written here on the same random draws, the resize / BGR / normalisation, the
expand fill, and crops that may leave no box."""
import numpy as np
from PIL import Image, ImageEnhance

from detx.data.transforms import ssd as T


def _example(h=60, w=80, boxes=((10, 12, 40, 50),), seed=0):
  rng = np.random.default_rng(seed)
  return dict(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
              boxes=np.asarray(boxes, np.float32), labels=np.arange(len(boxes)) + 3,
              is_crowd=np.zeros(len(boxes), bool), image_id=np.int64(7))


class _PaddleRandom:
  """np.random.uniform / random's calls of Paddle's operator, served by a Generator."""

  def __init__(self, rng):
    self.rng = rng

  def uniform(self, lo, hi):
    return self.rng.uniform(lo, hi)


def _paddle_random_distort(im, random):
  """operators.py RandomDistort.__call__ with SSDTrainFeed's arguments, transcribed."""
  def brightness(img):
    d = random.uniform(0.875, 1.125)
    return ImageEnhance.Brightness(img).enhance(d) if random.uniform(0, 1) < 0.5 else img

  def contrast(img):
    d = random.uniform(0.5, 1.5)
    return ImageEnhance.Contrast(img).enhance(d) if random.uniform(0, 1) < 0.5 else img

  def saturation(img):
    d = random.uniform(0.5, 1.5)
    return ImageEnhance.Color(img).enhance(d) if random.uniform(0, 1) < 0.5 else img

  def hue(img):
    d = random.uniform(-18, 18)
    if random.uniform(0, 1) < 0.5:
      img = np.array(img.convert('HSV'))
      img[:, :, 0] = img[:, :, 0] + d
      img = Image.fromarray(img, mode='HSV').convert('RGB')
    return img

  ops = [brightness, contrast, saturation, hue]
  if random.uniform(0, 1) < 0.5:
    ops = [brightness, saturation, hue, contrast]
  img = Image.fromarray(im)
  for op in ops:
    img = op(img)
  return np.asarray(img)


def test_samplers_are_ssd_train_feeds():
  assert T.SAMPLERS == (  # data_feed.py SSDTrainFeed CropImage(batch_sampler=...)
      (1, 1, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0), (1, 50, 0.3, 1.0, 0.5, 2.0, 0.1, 0.0),
      (1, 50, 0.3, 1.0, 0.5, 2.0, 0.3, 0.0), (1, 50, 0.3, 1.0, 0.5, 2.0, 0.5, 0.0),
      (1, 50, 0.3, 1.0, 0.5, 2.0, 0.7, 0.0), (1, 50, 0.3, 1.0, 0.5, 2.0, 0.9, 0.0),
      (1, 50, 0.3, 1.0, 0.5, 2.0, 0.0, 1.0))


def test_ordered_distort_equals_paddle_operator_transcription():
  image = _example()['image']
  changed = 0
  for seed in range(12):
    got = T.ordered_distort(image, np.random.default_rng(seed))
    want = _paddle_random_distort(image, _PaddleRandom(np.random.default_rng(seed)))
    np.testing.assert_array_equal(got, want)
    changed += not np.array_equal(got, image)
  assert changed >= 8


def test_eval_example_resize_bgr_normalise():
  ex = _example()
  out = T.eval_example(ex, 32, max_boxes=4)
  rgb = np.asarray(Image.fromarray(ex['image']).resize((32, 32), 1), np.float32)
  np.testing.assert_allclose(out['image'], (rgb[..., ::-1] - 127.5) / 127.502231, atol=1e-6)
  np.testing.assert_allclose(out['boxes'][0], [10 / 80, 12 / 60, 40 / 80, 50 / 60], rtol=1e-6)
  assert list(out['box_mask']) == [True, False, False, False] and out['classes'][0] == 3
  assert tuple(out['orig_size']) == (60, 80) and out['image_id'] == 7 and out['valid']


def test_expand_fill_is_uint8_127():
  from detx.data.transforms import yolo as Y
  ex = _example()
  target = dict(boxes=np.array([[0.1, 0.2, 0.5, 0.8]], np.float32), labels=np.array([1]),
                scores=np.ones(1, np.float32))
  for seed in range(20):
    img, _ = Y.random_expand(ex['image'], dict(target), np.random.default_rng(seed),
                             fill=T.EXPAND_FILL)
    if img.shape != ex['image'].shape:
      assert img[0, 0].tolist() == [127, 127, 127] or img[-1, -1].tolist() == [127, 127, 127]
      return
  raise AssertionError('no expansion in 20 draws')


def test_train_example_shapes_and_vanishing_boxes():
  ex = _example(boxes=((2, 2, 10, 9),))  # a small box in a corner
  empty = kept = 0
  for seed in range(40):
    out = T.train_example(ex, np.random.default_rng(seed), size=32, max_boxes=4)
    assert out['image'].shape == (32, 32, 3) and out['image'].dtype == np.float32
    m = out['box_mask']
    assert ((out['boxes'][m] >= 0) & (out['boxes'][m] <= 1)).all()
    empty += not m.any()
    kept += m.any()
  assert empty > 0 and kept > 0  # avoid_no_bbox=False: some crops drop the only box
  none = T.train_example(ex, np.random.default_rng(0), size=32, augment='none', max_boxes=4)
  np.testing.assert_allclose(none['image'], T.eval_example(ex, 32, 4)['image'])
