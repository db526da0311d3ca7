"""The YOLOv3 per-example transforms keep images and boxes consistent."""
import cv2
import numpy as np
import pytest

from detx.data import transforms
from detx.data.transforms import yolo as T


def _rng(seed=0):
  return np.random.default_rng(seed)


def _coord_image(h=96, w=128):
  """Channel 0 = x, channel 1 = y, channel 2 = 7: a crop reveals its window."""
  yy, xx = np.mgrid[0:h, 0:w]
  return np.stack([xx, yy, np.full_like(xx, 7)], -1).astype(np.uint8)


def _target(boxes):
  boxes = np.asarray(boxes, np.float32)
  n = len(boxes)
  return dict(boxes=boxes, labels=np.arange(n, dtype=np.int32),
              scores=np.ones(n, np.float32), ids=np.arange(n))


def _example(h=120, w=160, boxes=((10, 20, 59, 79), (80, 30, 149, 109)),
             crowd=None, seed=0):
  """Black image with white filled boxes (legacy pixel xyxy)."""
  image = np.zeros((h, w, 3), np.uint8)
  for x1, y1, x2, y2 in boxes:
    image[int(y1):int(y2) + 1, int(x1):int(x2) + 1] = 255
  n = len(boxes)
  return dict(image=image, image_id=np.int64(seed), height=h, width=w,
              boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
              labels=np.arange(n, dtype=np.int32) % 3,
              is_crowd=np.zeros(n, bool) if crowd is None else np.array(crowd))


def test_scale_sizes():
  zoo = list(range(320, 609, 32))
  assert T.scale_sizes(zoo, 0) == zoo
  assert T.scale_sizes(zoo, 608) == zoo
  assert T.scale_sizes(zoo, 1000) == zoo
  assert T.scale_sizes(zoo, 128) == [64, 96, 128]
  # Halved, rounded to multiples of 32 but never above the cap.
  assert T.scale_sizes(zoo, 304) == [160, 192, 224, 256, 288]
  assert T.scale_sizes([96, 128, 160], 128) == [64, 96, 128]
  assert T.scale_sizes([608], 100) == [96]
  assert T.scale_sizes([608], 10) == [64]
  assert T.scale_sizes(608, 256) == [256]


def test_flip_twice_is_identity():
  image = _coord_image()
  boxes = np.array([[0.1, 0.2, 0.4, 0.9], [0.5, 0.0, 1.0, 0.3]], np.float32)
  im1, b1 = T.flip(image, boxes)
  assert im1[0, 0, 0] == image[0, -1, 0]
  np.testing.assert_allclose(b1[0], [0.6, 0.2, 0.9, 0.9], atol=1e-6)
  im2, b2 = T.flip(im1, b1)
  np.testing.assert_array_equal(im2, image)
  np.testing.assert_allclose(b2, boxes, atol=1e-6)


def test_filter_and_project():
  boxes = np.array([[0.1, 0.1, 0.3, 0.3],    # centre inside
                    [0.45, 0.45, 0.9, 0.9],  # centre inside, clipped
                    [0.0, 0.0, 0.08, 0.9],   # centre outside (x=0.04 < 0.05)
                    [0.3, 0.3, 0.3, 0.5]],   # empty
                   np.float32)
  out, idx = T.filter_and_project((0.05, 0.05, 0.75, 0.75), boxes)
  assert list(idx) == [0, 1]
  np.testing.assert_allclose(out[0], np.array([0.05, 0.05, 0.25, 0.25]) / 0.7,
                             atol=1e-6)
  np.testing.assert_allclose(out[1], [0.4 / 0.7, 0.4 / 0.7, 1.0, 1.0],
                             atol=1e-6)


@pytest.mark.parametrize('seed', range(20))
def test_crop_keeps_centres_inside(seed):
  image = _coord_image()
  h, w = image.shape[:2]
  rng = _rng(seed)
  centres = rng.uniform(0.1, 0.9, (6, 2))
  half = rng.uniform(0.03, 0.2, (6, 2))
  boxes = np.concatenate([centres - half, centres + half], 1).clip(0, 1)
  out, target = T.random_crop(image, _target(boxes), rng)
  oh, ow = out.shape[:2]
  x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])  # the crop window in pixels
  assert (out[..., 2] == 7).all()
  np.testing.assert_array_equal(out, image[y0:y0 + oh, x0:x0 + ow])
  assert len(target['boxes']) >= 1  # avoid_no_bbox
  for key in ('labels', 'scores', 'ids'):
    assert len(target[key]) == len(target['boxes'])
  b = target['boxes']
  assert (b >= 0).all() and (b <= 1).all()
  assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
  for k, i in enumerate(target['ids']):
    ocx = (boxes[i, 0] + boxes[i, 2]) / 2 * w
    ocy = (boxes[i, 1] + boxes[i, 3]) / 2 * h
    # Original centre inside the window (1 px slack for int truncation).
    assert x0 - 1 <= ocx <= x0 + ow + 1 and y0 - 1 <= ocy <= y0 + oh + 1
    # The box re-expressed in the window maps back onto the original one.
    back_x = x0 + (b[k, [0, 2]]) * ow
    clip_x = np.clip(boxes[i, [0, 2]] * w, x0, x0 + ow)
    np.testing.assert_allclose(back_x, clip_x, atol=1.5)


def test_crop_without_boxes_returns_input():
  image = _coord_image()
  out, target = T.random_crop(image, _target(np.zeros((0, 4))), _rng())
  assert out is image and len(target['boxes']) == 0


@pytest.mark.parametrize('seed', range(10))
def test_expand_keeps_pixels_under_boxes(seed):
  ex = _example()
  target = _target(T.normalize_boxes(ex['boxes'], 120, 160))
  out, t = T.random_expand(ex['image'], target, _rng(seed), prob=1.0)
  oh, ow = out.shape[:2]
  assert oh >= 120 and ow >= 160 and out.dtype == np.uint8
  assert len(t['boxes']) == 2
  for x1, y1, x2, y2 in t['boxes']:
    patch = out[int(round(y1 * oh)):int(round(y2 * oh)),
                int(round(x1 * ow)):int(round(x2 * ow))]
    assert patch.size and (patch == 255).mean() > 0.95
  if (oh, ow) != (120, 160):
    assert (out == np.array([123, 116, 103], np.uint8)).all(-1).any()


def test_mixup():
  a = _example(h=100, w=80, boxes=[(0, 0, 9, 9)])
  b = _example(h=60, w=120, boxes=[(50, 20, 69, 39), (0, 0, 4, 4)])
  ta = T._target(a)
  tb = T._target(b)
  img, t = T.mixup(a['image'], ta, b['image'], tb, 0.25)
  assert img.shape == (100, 120, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(t['scores'], [0.25, 0.75, 0.75])
  np.testing.assert_array_equal(t['boxes'], np.concatenate([ta['boxes'],
                                                           tb['boxes']]))
  assert img[2, 2, 0] == int(255 * 0.25 + 255 * 0.75)   # both white
  assert img[7, 7, 0] == int(255 * 0.25)                 # a only
  assert img[30, 60, 0] == int(255 * 0.75)               # b only
  assert img[90, 100, 0] == 0                            # outside both
  same, t1 = T.mixup(a['image'], ta, b['image'], tb, 1.0)
  assert same is a['image'] and t1 is ta


def test_distort_is_deterministic():
  image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)
  a = T.random_distort(image, _rng(5))
  b = T.random_distort(image, _rng(5))
  assert a.shape == image.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  outs = [T.random_distort(image, _rng(s)) for s in range(8)]
  assert any(not np.array_equal(o, image) for o in outs)


def _denorm(image):
  return (image * transforms.STD + transforms.MEAN) * 255


@pytest.mark.parametrize('seed', range(12))
def test_train_pipeline_boxes_follow_pixels(seed):
  """White boxes on black: after the full augmentation (distort, expand,
  crop, random interp resize, flip) each valid box centre is still white-ish."""
  ex = _example()
  out = T.train_example(ex, 256, _rng(seed), max_boxes=50)
  img = _denorm(out['image']).mean(-1)
  lo, hi = np.percentile(img, 1), img.max()
  assert out['box_mask'].sum() >= 1
  for (x1, y1, x2, y2) in out['boxes'][out['box_mask']]:
    cx, cy = int((x1 + x2) / 2 * 256), int((y1 + y2) / 2 * 256)
    assert img[cy, cx] >= lo + 0.6 * (hi - lo)


def test_train_output_format():
  ex = _example(boxes=[(10, 20, 59, 79), (80, 30, 149, 109), (0, 0, 5, 5)],
                crowd=[False, True, False])
  partner = _example(h=90, w=90, boxes=[(5, 5, 50, 50)], seed=1)
  out = T.train_example(ex, 96, _rng(1), partner=partner, max_boxes=4)
  assert out['image'].shape == (96, 96, 3) and out['image'].dtype == np.float32
  assert out['boxes'].shape == (4, 4) and out['boxes'].dtype == np.float32
  assert out['classes'].shape == (4,) and out['classes'].dtype == np.int32
  assert out['scores'].shape == (4,) and out['scores'].dtype == np.float32
  assert out['box_mask'].shape == (4,) and out['box_mask'].dtype == bool
  assert out['image_id'] == 0 and out['valid']
  np.testing.assert_array_equal(out['orig_size'], [120, 160])
  m = out['box_mask']
  assert ((out['boxes'][m] >= 0) & (out['boxes'][m] <= 1)).all()
  assert (out['boxes'][~m] == 0).all() and (out['scores'][~m] == 0).all()
  # mixup: gt_score is the factor f for ex's boxes and 1-f for the partner's
  s = out['scores'][m]
  assert ((s > 0) & (s < 1)).all()
  again = T.train_example(ex, 96, _rng(1), partner=partner, max_boxes=4)
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])


def test_no_augment_equals_eval():
  ex = _example(boxes=[(10, 20, 59, 79), (80, 30, 149, 109)],
                crowd=[False, True])
  a = T.train_example(ex, 128, _rng(0), augment=False, max_boxes=8)
  b = T.eval_example(ex, 128, max_boxes=8)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  # crowd box excluded; boxes normalised by the original size
  assert b['box_mask'].sum() == 1
  np.testing.assert_allclose(b['boxes'][0], [10 / 160, 20 / 120, 59 / 160,
                                             79 / 120], atol=1e-6)
  want = cv2.resize(ex['image'], (128, 128), interpolation=cv2.INTER_CUBIC)
  np.testing.assert_allclose(_denorm(b['image']), want, atol=1e-3)


def test_max_boxes_truncates():
  boxes = [(i, i, i + 10, i + 10) for i in range(0, 60, 5)]
  out = T.eval_example(_example(boxes=boxes), 64, max_boxes=5)
  assert out['box_mask'].all() and out['boxes'].shape == (5, 4)
  np.testing.assert_array_equal(out['classes'], np.arange(5) % 3)


def test_padding_example():
  p = T.padding_example(64, 7)
  assert not p['valid'] and p['image'].shape == (64, 64, 3)
  assert p['boxes'].shape == (7, 4) and not p['box_mask'].any()


def _paddle_resize_path(image, size, target, interp, flipped):
  """PaddleDetection 597145c's order, run with OpenCV: RandomInterpImage
  (cv2.resize by fx/fy to target), RandomFlipImage, NormalizeImage, then
  RandomShape (cv2.resize by fx/fy, INTER_NEAREST) on the float image."""
  h, w = image.shape[:2]
  im = cv2.resize(image, None, None, fx=target / w, fy=target / h,
                  interpolation=interp)
  if flipped:
    im = np.ascontiguousarray(im[:, ::-1])
  im = transforms.normalize_image(im)
  return cv2.resize(im, None, None, fx=size / target, fy=size / target,
                    interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize('size', [320, 416, 608])
def test_random_shape_is_opencv_run_paddles_way(size):
  image = np.random.default_rng(size).integers(0, 256, (173, 251, 3), np.uint8)
  boxes = np.array([[0.1, 0.2, 0.4, 0.9]], np.float32)
  for interp in T.INTERPS:
    for flipped in (False, True):
      out, b = T.random_shape(image, boxes, size, 608, interp, flipped)
      assert out.shape == (size, size, 3) and out.dtype == np.uint8
      np.testing.assert_array_equal(
          transforms.normalize_image(out),
          _paddle_resize_path(image, size, 608, interp, flipped))
      np.testing.assert_allclose(b, [[0.6, 0.2, 0.9, 0.9]] if flipped else boxes,
                                 atol=1e-6)


def test_train_example_resize_path_pixel_equal(monkeypatch):
  """train_example's full path with distort / expand / crop made identity: its
  output is OpenCV run Paddle's way with the interpolation and flip the same
  RNG draws (interp index, then flip) pick."""
  monkeypatch.setattr(T, 'random_distort', lambda image, rng: image)
  monkeypatch.setattr(T, 'random_expand', lambda image, target, rng: (image, target))
  monkeypatch.setattr(T, 'random_crop', lambda image, target, rng: (image, target))
  ex = _example(h=150, w=210)
  seen = set()
  for seed in range(24):
    r = _rng(seed)
    interp = T.INTERPS[int(r.integers(len(T.INTERPS)))]
    flipped = r.uniform() < 0.5
    seen.add((interp, flipped))
    out = T.train_example(ex, 352, _rng(seed), target_size=608, max_boxes=4)
    np.testing.assert_array_equal(
        out['image'], _paddle_resize_path(ex['image'], 352, 608, interp, flipped))
  assert {i for i, _ in seen} == set(T.INTERPS) and len({f for _, f in seen}) == 2
