import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import anchor_generator, retinanet_anchor_sizes, retinanet_anchors


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def _paddle_anchors(paddle, feat_hw, sizes, ratios, stride, offset):
  from paddle import _legacy_C_ops
  x = paddle.zeros([1, 1, feat_hw[0], feat_hw[1]], dtype='float32')
  stride = [float(s) for s in (stride if np.ndim(stride) else (stride, stride))]
  anchors, _ = _legacy_C_ops.anchor_generator(
      x, 'anchor_sizes', [float(s) for s in sizes], 'aspect_ratios', [float(r) for r in ratios],
      'variances', [1.0, 1.0, 1.0, 1.0], 'stride', stride, 'offset', float(offset))
  return anchors.numpy().reshape(-1, 4)


def test_known_values():
  # stride 16, size 32, ratio 0.5: base_w = round(sqrt(512)) = 23, base_h = round(11.5) = 12,
  # scaled by 2: 46 x 24 around the centre 7.5.
  a = np.asarray(anchor_generator((2, 3), [32.0, 64.0], [0.5, 1.0, 2.0], 16.0))
  assert a.shape == (2 * 3 * 6, 4)
  np.testing.assert_array_equal(a[0], [7.5 - 22.5, 7.5 - 11.5, 7.5 + 22.5, 7.5 + 11.5])
  # Ratio is the outer loop, size the inner one; then the next column (x + 16).
  np.testing.assert_array_equal(a[1], [7.5 - 45.5, 7.5 - 23.5, 7.5 + 45.5, 7.5 + 23.5])
  np.testing.assert_array_equal(a[6], a[0] + [16, 0, 16, 0])
  np.testing.assert_array_equal(a[18], a[0] + [0, 16, 0, 16])  # next row


def test_round_half_away_from_zero():
  # stride 32, ratio 0.5: base_w = round(45.25) = 45, base_h = round(22.5) = 23 (C round,
  # not banker's rounding, which would give 22).
  a = np.asarray(anchor_generator((1, 1), [32.0], [0.5], 32.0))
  np.testing.assert_array_equal(a[0, 2:] - a[0, :2] + 1, [45, 23])


CASES = [  # feat_hw, sizes, ratios, stride, offset
    ((5, 7), [32, 64, 128, 256, 512], [0.5, 1.0, 2.0], 16.0, 0.5),  # C4 RPN
    ((9, 6), [32], [0.5, 1.0, 2.0], 4.0, 0.5),  # FPN P2
    ((3, 4), [512], [0.5, 1.0, 2.0], 64.0, 0.5),  # FPN P6
    ((4, 5), retinanet_anchor_sizes(8), [1.0, 2.0, 0.5], 8.0, 0.5),  # RetinaNet P3
    ((3, 3), [40, 80], [0.3, 3.0], (8.0, 16.0), 0.0),  # non-square stride, offset 0
]


@pytest.mark.parametrize('case', CASES)
def test_parity(paddle, case):
  feat_hw, sizes, ratios, stride, offset = case
  want = _paddle_anchors(paddle, feat_hw, sizes, ratios, stride, offset)
  got = np.asarray(anchor_generator(feat_hw, sizes, ratios, stride, offset))
  assert got.shape == want.shape and got.dtype == np.float32
  np.testing.assert_array_equal(got, want)


def test_retinanet_helpers():
  sizes = retinanet_anchor_sizes(8)
  np.testing.assert_allclose(sizes, [32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
  a = retinanet_anchors((2, 2), 8)
  assert a.shape == (2 * 2 * 9, 4)
  np.testing.assert_array_equal(a, anchor_generator((2, 2), sizes, [1.0, 2.0, 0.5], 8))


def test_usable_under_jit():
  fn = jax.jit(lambda x: anchor_generator(x.shape[1:3], [32.0], [1.0], 16.0) + x.sum())
  out = fn(jnp.zeros((1, 2, 2, 1)))
  assert out.shape == (4, 4)
