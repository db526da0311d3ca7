"""Paddle's evaluation geometry on bucketed batches: maps zeroed beyond each image's extent.

Paddle evaluated the R-CNNs one image at a time (C4 on the unpadded image, FPN padded to
a multiple of 32) and RetinaNet two images at a time padded to 128; detx pads every eval
image into a shared bucket. A 3x3 conv (or a pool) at an image's border then reads
features computed in the padding (a norm's shift, a conv's bias) where Paddle read zero
padding, and the RPN / RetinaNet heads score anchors Paddle never had.

While `active(extent, bucket_hw)` is on (inside a model's eval forward, around the
backbone, neck and the dense heads), `mask(x)` zeroes a map x beyond each image's
extent at x's resolution; `valid(hw)` is the [B, H, W] mask itself. The extent at a map
reached by k stride-2 steps (convs with padding (k - 1) // 2, the stem max-pool, the vd
ceil avg-pool, FPN's subsampled P6) is ceil(extent / 2^k), as each step maps a size s to
ceil(s / 2). The backbones, FPN and RetinaNet head call `mask` on every map a conv or
pool reads, so a conv's output inside the extent equals the unpadded run's (tested in
tests/models/test_eval_geometry.py); the RPN and RetinaNet drop the anchors beyond it.
Under `pooling` (around the R-CNN RoI heads), RoIAlign samples each image's map as if it
were unpadded (ops.roi_align's valid_hw). Outside these scopes (training, the bucketed
mode) all of this is a no-op. The state is a context variable set and reset within one trace
(under jit it holds tracers of the same trace), not a global that outlives a call.
"""
import contextlib
import contextvars

import jax.numpy as jnp

GEOMETRIES = ('paddle', 'bucket')

_STATE = contextvars.ContextVar('detx_extent', default=None)
_POOL = contextvars.ContextVar('detx_pool_extent', default=None)  # RoIAlign's (see pooling)


@contextlib.contextmanager
def active(extent, bucket_hw):
  """extent [B, 2] (h, w) of each image in input pixels; bucket_hw: the input's (H, W)."""
  token = _STATE.set((jnp.asarray(extent, jnp.int32), tuple(int(s) for s in bucket_hw)))
  try:
    yield
  finally:
    _STATE.reset(token)


def _halvings(size: int, target: int) -> int:
  """k with ceil(size / 2^k) == target (the smallest)."""
  k = 0
  while size > target:
    size, k = -(-size // 2), k + 1
  if size != target:
    raise ValueError(f'a map of size {target} is not a stride-2^k map of an input of {size}')
  return k


def at(hw, state=None):
  """Each image's extent [B, 2] at a map of spatial size hw, or None when inactive."""
  state = state or _STATE.get()
  if state is None:
    return None
  extent, bucket = state
  ks = [_halvings(b, int(t)) for b, t in zip(bucket, hw)]
  div = jnp.asarray([2 ** k for k in ks], jnp.int32)
  return (extent + div - 1) // div


def valid(hw):
  """bool [B, H, W]: inside each image's extent at a map of size hw; None when inactive."""
  e = at(hw)
  if e is None:
    return None
  rows = jnp.arange(hw[0])[None, :, None] < e[:, 0, None, None]
  cols = jnp.arange(hw[1])[None, None, :] < e[:, 1, None, None]
  return rows & cols


def mask(x):
  """NHWC x with zeros beyond each image's extent (x unchanged when inactive)."""
  v = valid(x.shape[1:3])
  if v is None:
    return x
  return jnp.where(v[..., None], x, jnp.zeros((), x.dtype))


@contextlib.contextmanager
def scope(extent, bucket_hw, on: bool):
  """`active(extent, bucket_hw)` when on, else nothing; yields on."""
  if not on:
    yield False
    return
  with active(extent, bucket_hw):
    yield True


def geometry(config) -> str:
  """config.eval.geometry ('paddle' when absent); ConfigError for another value."""
  name = config.eval.get('geometry', 'paddle')
  if name not in GEOMETRIES:
    from detx.errors import ConfigError
    raise ConfigError(f'eval.geometry must be one of {", ".join(GEOMETRIES)}, got {name!r}')
  return name


@contextlib.contextmanager
def pooling(extent, bucket_hw, on: bool = True):
  """While on, `pool_hw` gives RoIAlign each image's map size (the RoI heads' convs read
  RoI features, so `active` is off around them)."""
  token = _POOL.set((jnp.asarray(extent, jnp.int32), tuple(int(s) for s in bucket_hw))
                    if on else None)
  try:
    yield
  finally:
    _POOL.reset(token)


def pooling_state():
  """(extent [B, 2], bucket_hw) of the `pooling` scope, or None."""
  return _POOL.get()


def pool_hw(hw):
  """Under `pooling`: each image's map size [B, 2] at a feature map of size hw (RoIAlign's
  valid_hw); None otherwise."""
  state = _POOL.get()
  return None if state is None else at(hw, state)

