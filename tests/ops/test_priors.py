"""detx.ops.priors: SSD prior boxes checked against paddlepaddle's prior_box op."""
import numpy as np
import pytest

from detx.ops.priors import expand_aspect_ratios, prior_box, priors_per_cell, ssd_priors

# SSD MobileNet-V1 VOC (PaddleDetection 597145c, MultiBoxHead): the six layers at 300.
FEATS = ((19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1))
MIN_SIZES = (60.0, 105.0, 150.0, 195.0, 240.0, 285.0)
MAX_SIZES = (0.0, 150.0, 195.0, 240.0, 285.0, 300.0)
RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0))


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def test_expand_aspect_ratios():
  assert expand_aspect_ratios((2.0, 3.0), True) == [1.0, 2.0, 0.5, 3.0, 1 / 3]
  assert expand_aspect_ratios((2.0, 1.0, 2.0), False) == [1.0, 2.0]
  assert priors_per_cell(1, False, (2.0,), True) == 3
  assert priors_per_cell(1, True, (2.0, 3.0), True) == 6


def test_ssd_priors_count_and_first_cell():
  boxes, var = ssd_priors(FEATS, (300, 300), MIN_SIZES, MAX_SIZES, RATIOS)
  assert boxes.shape == var.shape == (19 * 19 * 3 + 6 * (100 + 25 + 9 + 4 + 1), 4)
  np.testing.assert_allclose(var[0], [0.1, 0.1, 0.2, 0.2])
  step = 300 / 19
  c = 0.5 * step
  np.testing.assert_allclose(boxes[0], np.array([c - 30, c - 30, c + 30, c + 30]) / 300, rtol=1e-6)
  # The 1x1 layer's sqrt(285 * 300) square prior comes after its 5 ratio priors.
  s = np.sqrt(285 * 300) / 2
  np.testing.assert_allclose(boxes[-1], np.array([150 - s, 150 - s, 150 + s, 150 + s]) / 300,
                             rtol=1e-5)


@pytest.mark.parametrize('layer', range(6))
@pytest.mark.parametrize('clip', [False, True])
def test_prior_box_parity_ssd_settings(paddle, layer, clip):
  """Each SSD layer's priors and variances against paddle.vision.ops.prior_box run with
  the same settings (flip, offset 0.5, steps from the sizes, variances 0.1/0.2)."""
  h, w = FEATS[layer]
  feat = paddle.zeros([1, 8, h, w])
  image = paddle.zeros([1, 3, 300, 300])
  maxes = [MAX_SIZES[layer]] if MAX_SIZES[layer] else None
  want_b, want_v = paddle.vision.ops.prior_box(
      feat, image, [MIN_SIZES[layer]], maxes, list(RATIOS[layer]),
      [0.1, 0.1, 0.2, 0.2], flip=True, clip=clip, steps=[0.0, 0.0], offset=0.5)
  got_b, got_v = prior_box((h, w), (300, 300), (MIN_SIZES[layer],),
                           (MAX_SIZES[layer],) if maxes else (), RATIOS[layer],
                           flip=True, clip=clip)
  assert got_b.shape == tuple(want_b.shape)
  np.testing.assert_allclose(got_b, want_b.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got_v, want_v.numpy())


def test_prior_box_parity_non_square_steps(paddle):
  feat = paddle.zeros([1, 8, 4, 6])
  image = paddle.zeros([1, 3, 90, 120])
  want_b, _ = paddle.vision.ops.prior_box(feat, image, [20.0, 40.0], [30.0, 60.0], [2.0],
                                          flip=False, steps=[16.0, 24.0], offset=0.3)
  got_b, _ = prior_box((4, 6), (90, 120), (20.0, 40.0), (30.0, 60.0), (2.0,),
                       steps=(16.0, 24.0), offset=0.3)
  np.testing.assert_allclose(got_b, want_b.numpy(), rtol=1e-6, atol=1e-6)
