"""Small building blocks shared by the backbones and heads.

Module names follow PaddleDetection's parameter prefixes (dots included), so that
`detx.weights` can map a Flax parameter path to a Paddle file name mechanically:
`<prefix>/conv/kernel` <-> `<prefix>.conv.weights`, `<prefix>/bn/scale` <-> `<prefix>.bn.scale`.
"""
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def leaky_relu(x):
  return nn.leaky_relu(x, negative_slope=0.1)


ACTIVATIONS: dict[str, Callable | None] = {
    'leaky': leaky_relu, 'relu': nn.relu, 'none': None}


class ConvBN(nn.Module):
  """Conv (symmetric (k-1)//2 padding, no bias) + BatchNorm + activation.

  BatchNorm statistics are taken over the whole batch seen by the jitted step:
  with the batch sharded over a mesh this is Paddle's sync_bn.
  """
  features: int
  kernel: int = 3
  stride: int = 1
  groups: int = 1
  act: str = 'leaky'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    p = (self.kernel - 1) // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                padding=((p, p), (p, p)), feature_group_count=self.groups,
                use_bias=False, dtype=self.dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=jnp.float32, name='bn')(x)
    act = ACTIVATIONS[self.act]
    x = x if act is None else act(x)
    return x.astype(self.dtype)


def upsample_nearest(x, factor: int = 2):
  """Nearest 2x upsampling of NHWC maps (Paddle's align_corners resize gives the same)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
