"""The model's first op: a batch image as the network reads it.

Input pipelines hand over `image` either already normalised (float32, the default:
Paddle's order, R-CNN normalising before the resize) or as resized uint8 RGB
(`data.image_dtype='uint8'`: a quarter of the bytes through the loader's worker
processes). A uint8 image is normalised here, on the device inside the jitted step,
with the ImageNet mean/std of detx.data.transforms; where the batch says how much
of each image is real (`image_hw`, the R-CNN bucket padding) the padding is zero
after normalising, as on the float path. The dtype is static under jit, so each
path traces its own program.
"""
import jax.numpy as jnp
import numpy as np

from detx.data.transforms import MEAN, STD

_SHIFT = (MEAN * 255).astype(np.float32)
_INV_SCALE = (1 / (STD * 255)).astype(np.float32)


def normalize(image, image_hw=None):
  """uint8 [B, H, W, 3] RGB -> float32 (x - 255 mean) / (255 std), zero beyond each
  image's (h, w) in `image_hw` [B, 2] when given; any other dtype passes through."""
  if image.dtype != jnp.uint8:
    return image
  out = (image.astype(jnp.float32) - _SHIFT) * _INV_SCALE
  if image_hw is None:
    return out
  hw = jnp.asarray(image_hw, jnp.int32)
  rows = jnp.arange(image.shape[1])[None, :, None] < hw[:, 0, None, None]
  cols = jnp.arange(image.shape[2])[None, None, :] < hw[:, 1, None, None]
  return jnp.where((rows & cols)[..., None], out, 0.0)


def batch_image(batch):
  """batch['image'] normalised (see `normalize`), padding zeroed by batch['image_hw']
  when the batch has it."""
  return normalize(batch['image'], batch.get('image_hw'))
