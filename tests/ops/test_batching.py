"""Per-image batch helpers (detx.ops.batching): im_info, padded_hw, group_size, grouped."""
import jax.numpy as jnp
import numpy as np

from detx.ops import group_size, grouped, im_info, padded_hw


def test_im_info():
  info = im_info(jnp.array([[600, 800], [480, 640]], jnp.int32), jnp.array([1.5, 2.0]))
  assert info.dtype == jnp.float32
  np.testing.assert_array_equal(info, [[600, 800, 1.5], [480, 640, 2.0]])


def test_padded_hw_rounds_up_within_the_bucket():
  hw = jnp.array([[600, 790], [481, 640]], jnp.int32)
  np.testing.assert_array_equal(padded_hw(hw, 32, (608, 800)), [[608, 800], [512, 640]])
  np.testing.assert_array_equal(padded_hw(hw, 128, (608, 800)), [[608, 800], [512, 640]])
  np.testing.assert_array_equal(padded_hw(hw, 0, (608, 800)), hw)


def test_group_size():
  assert [group_size(8, g) for g in (2, 3, 8, 16, 0, -1)] == [2, 1, 8, 8, 1, 1]


def test_grouped():
  """FPN training collects proposals over groups of rpn.collect_images images."""
  out = grouped(lambda x: x - x.sum(0, keepdims=True), 4, 2, jnp.arange(4.0))
  np.testing.assert_array_equal(out, [-1.0, 0.0, -3.0, -2.0])
  whole = grouped(lambda x: x - x.sum(0, keepdims=True), 4, 4, jnp.arange(4.0))
  np.testing.assert_array_equal(whole, jnp.arange(4.0) - 6)
  pair = grouped(lambda a, b: {'s': a[:, None] + b}, 4, 2, jnp.arange(4.0), jnp.ones((4, 3)))
  assert pair['s'].shape == (4, 3)
