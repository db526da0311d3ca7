import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import yolo_box, yolo_loss

ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
LEVELS = [([6, 7, 8], 32, 5), ([3, 4, 5], 16, 8), ([0, 1, 2], 8, 12)]  # mask, stride, grid


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def _nchw_to_nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _loss_inputs(rng, n=3, b=7, c=5, a=3, grid=8, collide_anchor=None, stride=16):
  x = rng.normal(size=(n, a * (5 + c), grid, grid)).astype(np.float32)
  gt = np.zeros((n, b, 4), np.float32)
  gt[..., :2] = rng.uniform(0.02, 0.98, (n, b, 2))
  gt[..., 2:] = rng.uniform(0.02, 0.9, (n, b, 2))
  gt[0, 5:] = 0  # padding
  gt[1, 3:] = 0
  gt[2, 0, 2] = 0  # zero width: padding too
  if collide_anchor is not None:  # two GTs in one cell, both matched to this anchor
    gt[2, 1, 2:] = np.array(ANCHORS[2 * collide_anchor:2 * collide_anchor + 2]) / (stride * grid)
    gt[2, 2] = gt[2, 1]
    gt[2, 2, 2:] *= 1.02
  label = rng.integers(0, c, (n, b)).astype(np.int32)
  score = rng.uniform(0.2, 1.0, (n, b)).astype(np.float32)
  return x, gt, label, score


def _paddle_loss(paddle, x, gt, label, score, mask, c, thr, stride, smooth):
  return paddle.vision.ops.yolo_loss(
      paddle.to_tensor(x), paddle.to_tensor(gt), paddle.to_tensor(label), ANCHORS, mask, c, thr,
      stride, gt_score=None if score is None else paddle.to_tensor(score),
      use_label_smooth=smooth)


@pytest.mark.parametrize('level', LEVELS)
@pytest.mark.parametrize('smooth', [True, False])
def test_yolo_loss_parity(paddle, level, smooth):
  mask, stride, grid = level
  rng = np.random.default_rng(grid)
  c = 5  # 1/C > 1/40, so Paddle's min(1/C, 1/40) smoothing rule is exercised
  x, gt, label, score = _loss_inputs(rng, c=c, grid=grid, collide_anchor=mask[1], stride=stride)
  for thr in (0.5, 0.7):
    want = _paddle_loss(paddle, x, gt, label, score, mask, c, thr, stride, smooth).numpy()
    got = yolo_loss(_nchw_to_nhwc(x), jnp.asarray(gt), jnp.asarray(label), jnp.asarray(score),
                    ANCHORS, mask, c, thr, stride, use_label_smooth=smooth)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_yolo_loss_parity_many_classes_no_score(paddle):
  rng = np.random.default_rng(7)
  mask, stride, grid = LEVELS[1]
  x, gt, label, _ = _loss_inputs(rng, c=80, grid=grid, collide_anchor=mask[1], stride=stride)
  want = _paddle_loss(paddle, x, gt, label, None, mask, 80, 0.7, stride, True).numpy()
  got = yolo_loss(_nchw_to_nhwc(x), jnp.asarray(gt), jnp.asarray(label), None, ANCHORS, mask, 80,
                  0.7, stride)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_yolo_loss_grad_parity(paddle):
  # Without two GTs in one cell: there Paddle's backward keeps only the last GT's
  # gradient although its forward sums both; ours is the gradient of the forward.
  rng = np.random.default_rng(3)
  mask, stride, grid = LEVELS[1]
  x, gt, label, score = _loss_inputs(rng, grid=grid)
  cells = rng.choice(grid * grid, gt.shape[0] * gt.shape[1], replace=False).reshape(gt.shape[:2])
  gt[..., 0] = (cells % grid + rng.uniform(0.1, 0.9, cells.shape)) / grid
  gt[..., 1] = (cells // grid + rng.uniform(0.1, 0.9, cells.shape)) / grid
  gt[0, 5:] = 0
  xp = paddle.to_tensor(x, stop_gradient=False)
  loss = paddle.vision.ops.yolo_loss(xp, paddle.to_tensor(gt), paddle.to_tensor(label), ANCHORS,
                                     mask, 5, 0.5, stride, gt_score=paddle.to_tensor(score))
  (loss * paddle.to_tensor(np.array([1.0, 2.0, 0.5], np.float32))).sum().backward()
  want = xp.grad.numpy().transpose(0, 2, 3, 1)
  fn = lambda v: jnp.dot(yolo_loss(v, jnp.asarray(gt), jnp.asarray(label), jnp.asarray(score),
                                   ANCHORS, mask, 5, 0.5, stride), jnp.array([1.0, 2.0, 0.5]))
  got = jax.grad(fn)(_nchw_to_nhwc(x))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_yolo_loss_no_boxes_is_negative_objectness_and_finite_grad():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 3 * 7)).astype(np.float32))
  gt = jnp.zeros((2, 5, 4))
  label = jnp.zeros((2, 5), jnp.int32)
  fn = jax.jit(lambda v: yolo_loss(v, gt, label, jnp.ones((2, 5)), ANCHORS, [0, 1, 2], 2, 0.7, 8))
  loss = fn(x)
  obj = x.reshape(2, 4, 4, 3, 7)[..., 4]
  np.testing.assert_allclose(loss, jnp.sum(jax.nn.softplus(obj), axis=(1, 2, 3)), rtol=1e-5)
  grad = jax.grad(lambda v: fn(v).sum())(x)
  assert np.all(np.isfinite(grad))


def test_yolo_loss_grad_finite_with_boxes():
  rng = np.random.default_rng(1)
  x, gt, label, score = _loss_inputs(rng, grid=8, collide_anchor=4)
  fn = jax.jit(lambda v: yolo_loss(v, jnp.asarray(gt), jnp.asarray(label), jnp.asarray(score),
                                   ANCHORS, [3, 4, 5], 5, 0.7, 16).sum())
  grad = jax.grad(fn)(_nchw_to_nhwc(x))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize('hw', [(5, 5), (4, 7)])
@pytest.mark.parametrize('clip', [True, False])
@pytest.mark.parametrize('scale_x_y', [1.0, 1.05])
def test_yolo_box_parity(paddle, hw, clip, scale_x_y):
  rng = np.random.default_rng(0)
  n, c = 3, 4
  anchors = [(10, 13), (16, 30), (33, 23)]
  x = (rng.normal(size=(n, 3 * (5 + c)) + hw) * 1.5).astype(np.float32)
  img_size = np.array([[400, 600], [333, 500], [160, 160]], np.int32)
  want_boxes, want_scores = paddle.vision.ops.yolo_box(
      paddle.to_tensor(x), paddle.to_tensor(img_size), sum(map(list, anchors), []), c, 0.3, 32,
      clip_bbox=clip, scale_x_y=scale_x_y)
  boxes, scores = yolo_box(_nchw_to_nhwc(x), jnp.asarray(img_size), anchors, c, 0.3, 32,
                           clip_bbox=clip, scale_x_y=scale_x_y)
  assert boxes.shape == (n, 3 * hw[0] * hw[1], 4) and scores.shape == (n, 3 * hw[0] * hw[1], c)
  np.testing.assert_allclose(boxes, want_boxes.numpy(), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-5, atol=1e-6)


def test_yolo_box_order_and_values():
  h, w, c = 3, 4, 2
  x = np.full((1, h, w, 3, 5 + c), -20.0, np.float32)  # every objectness below threshold
  x[0, 2, 1, 1, :5] = [0.0, 0.0, 0.0, 0.0, 20.0]  # anchor 1, row 2, column 1
  x[0, 2, 1, 1, 5:] = [20.0, -20.0]
  anchors = [(10, 10), (32, 64), (40, 40)]
  boxes, scores = jax.jit(lambda v: yolo_box(v, jnp.array([[96, 128]]), anchors, c, 0.01, 32,
                                         clip_bbox=False))(
      jnp.asarray(x.reshape(1, h, w, -1)))
  k = 1 * h * w + 2 * w + 1
  np.testing.assert_allclose(scores[0, k], [1.0, 0.0], atol=1e-6)
  # Centre (1.5, 2.5) cells * 32 px; size = anchor (input 96 x 128 = original size).
  np.testing.assert_allclose(boxes[0, k], [48 - 16, 80 - 32, 48 + 16, 80 + 32], rtol=1e-6)
  others = np.delete(np.arange(3 * h * w), k)
  assert np.all(np.asarray(boxes[0, others]) == 0) and np.all(np.asarray(scores[0, others]) == 0)
