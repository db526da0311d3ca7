"""Per-image helpers of a batch: Paddle's `im_info`, the padded evaluation sizes, and
running an op on groups of consecutive images (`grouped`, Paddle's images per GPU)."""
import math

import jax
import jax.numpy as jnp


def im_info(image_hw, scale):
  """[N, 3] = (h, w, scale), Paddle's im_info."""
  return jnp.concatenate([image_hw.astype(jnp.float32), scale.astype(jnp.float32)[:, None]], 1)


def padded_hw(image_hw, stride: int, bucket_hw):
  """Evaluation im_info sizes: each resized (h, w) rounded up to `stride` (Paddle's
  padded im_info), at most the batch's pad bucket; stride 0 leaves them unpadded."""
  hw = image_hw.astype(jnp.float32)
  if stride > 0:
    hw = jnp.minimum(jnp.ceil(hw / stride) * stride, jnp.asarray(bucket_hw, jnp.float32))
  return hw


def group_size(n: int, group: int) -> int:
  """Images per group: gcd(N, group), with group < 1 taken as 1."""
  return math.gcd(n, max(int(group), 1))


def grouped(fn, n: int, group: int, *trees):
  """fn on groups of gcd(N, group) consecutive images of pytrees of [N, ...] arrays
  (vmapped over the groups; one call on the whole batch when the group is N). fn's
  outputs keep a leading image axis; they are joined back to [N, ...]."""
  g = group_size(n, group)
  if g == n:
    return fn(*trees)
  split = jax.tree.map(lambda a: a.reshape((n // g, g) + a.shape[1:]), trees)
  out = jax.vmap(fn)(*split)
  return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)
