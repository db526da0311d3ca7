"""Small building blocks shared by the backbones and heads.

Module names follow PaddleDetection's parameter prefixes (dots included), so that
`detx.weights` can map a Flax parameter path to a Paddle file name mechanically:
`<prefix>/conv/kernel` <-> `<prefix>.conv.weights`, `<prefix>/bn/scale` <-> `<prefix>.bn.scale`.
"""
from typing import Any, Callable

import functools

import flax.linen as nn
from flax.linen import dtypes
import jax.numpy as jnp

from detx.ops import conv as conv_ops

Dtype = Any


def promote_keeping_bias(inputs, kernel, bias=None, dtype=None, inexact=True):
  """flax's promote_dtype for (inputs, kernel, bias), the bias left float32: the layer
  then adds it in float32, so the bias gradient (a sum over every output position) is
  accumulated in float32. With a bf16 bias that sum is a bf16 reduction, which XLA's
  CPU backend accumulates in bf16 (relative error ~0.9 over a 16x64x64 map): every
  biased layer's bias gradient was noise, and bf16 runs learned slower than float32."""
  inputs, kernel = dtypes.promote_dtype(inputs, kernel, dtype=dtype, inexact=inexact)
  return inputs, kernel, bias


def promote_none(inputs, kernel, bias=None, dtype=None, inexact=True):
  """flax's promote_dtype hook for detx.ops.conv in mixed precision: nothing is cast
  here. The conv (given compute_dtype, see mixed_conv) casts input and kernel itself and
  returns both gradients in float32, unrounded; the bias is added in float32."""
  return inputs, kernel, bias


def mixed_conv(dtype, **kw):
  """detx.ops.conv.conv_general_dilated computing in `dtype` (None / float32: plain)."""
  if dtype is None or jnp.dtype(dtype) == jnp.float32:
    return functools.partial(conv_ops.conv_general_dilated, **kw)
  return functools.partial(conv_ops.conv_general_dilated, compute_dtype=dtype, **kw)


class _Conv(nn.Conv):
  promote_dtype: Callable = promote_none

  def __call__(self, inputs):
    y = super().__call__(inputs)
    return y if self.dtype is None else y.astype(self.dtype)


def Conv(*args, dtype: Dtype | None = None, **kw) -> nn.Conv:  # noqa: N802 (a layer)
  """nn.Conv with the CPU's fast kernel gradients (detx.ops.conv), computed in `dtype`
  with float32 gradients for its float32 input and kernel (mixed_conv), its bias added
  in float32; the output is cast to `dtype`. Same parameters, names and float32 values
  as nn.Conv."""
  return _Conv(*args, dtype=dtype, conv_general_dilated=mixed_conv(dtype), **kw)


def conv_into_norm(features, kernel, stride, padding, groups, dtype, name, **kw):
  """The conv of a conv + norm pair. In bf16 it accumulates and returns float32: the
  norm reads it unrounded. Rounded to bf16 first, a channel whose spread is small
  against its mean (flat image regions) became rounding noise once normalised, and bf16
  runs trained well below float32 (quickstart AP50 0.25 against 0.51, seed 0). float32:
  a plain Conv."""
  f32 = jnp.dtype(dtype) == jnp.float32
  conv = mixed_conv(dtype, **({} if f32 else {'preferred_element_type': jnp.float32}))
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding,
                 feature_group_count=groups, use_bias=False, dtype=dtype, name=name,
                 conv_general_dilated=conv, promote_dtype=promote_none, **kw)


class Dense(nn.Dense):
  """nn.Dense with its bias added in float32 (promote_keeping_bias), output in `dtype`."""
  promote_dtype: Callable = promote_keeping_bias

  def __call__(self, inputs):
    y = super().__call__(inputs)
    return y if self.dtype is None else y.astype(self.dtype)


def leaky_relu(x):
  return nn.leaky_relu(x, negative_slope=0.1)


ACTIVATIONS: dict[str, Callable | None] = {
    'leaky': leaky_relu, 'relu': nn.relu, 'none': None}


class ConvBN(nn.Module):
  """Conv (symmetric (k-1)//2 padding, no bias) + BatchNorm + activation, output float32
  (the conv computes in `dtype`).

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
    x = conv_into_norm(self.features, self.kernel, self.stride, ((p, p), (p, p)),
                       self.groups, self.dtype, 'conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     use_fast_variance=False,
                     dtype=jnp.float32, name='bn')(x)
    act = ACTIVATIONS[self.act]
    # float32 out in every dtype: the next conv casts to bf16 itself and returns this
    # output's gradient float32 (detx.ops.conv), so residual adds, concats and the
    # cotangent entering this BatchNorm's backward are never rounded to bf16.
    return x if act is None else act(x)


def upsample_nearest(x, factor: int = 2):
  """Nearest 2x upsampling of NHWC maps (Paddle's align_corners resize gives the same)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


# Normalisation layers of Paddle's backbones (appended; ConvBN above is unchanged).
import jax  # noqa: E402  (kept with the code that uses it)


class AffineChannel(nn.Module):
  """Paddle's affine_channel: y = x * scale + bias per channel (a BN folded into two vectors).

  Parameters are `scale` and `bias` (the names of Flax's BatchNorm, so the weight rules
  treat both alike; Paddle calls them `<prefix>_scale` / `<prefix>_offset`). With
  `frozen=True` (Paddle's freeze_norm, the zoo default) both get stop_gradient.
  """
  frozen: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    if self.frozen:
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    y = x.astype(jnp.float32) * scale + bias
    return y.astype(self.dtype)


class FrozenBatchNorm(nn.Module):
  """BatchNorm with Paddle's use_global_stats + freeze_norm: running statistics always,
  scale/bias under stop_gradient. Same variables as nn.BatchNorm (params scale/bias,
  batch_stats mean/var), so checkpoints move freely between the two."""
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = jax.lax.stop_gradient(self.param('scale', nn.initializers.ones, (c,), jnp.float32))
    bias = jax.lax.stop_gradient(self.param('bias', nn.initializers.zeros, (c,), jnp.float32))
    mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32)).value
    var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32)).value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    y = x.astype(jnp.float32) * mul + (bias - mean * mul)
    return y.astype(self.dtype)


NORMS = ('affine', 'bn', 'sync_bn')


def norm_layer(norm: str, frozen: bool, train: bool, name: str, dtype: Dtype = jnp.float32):
  """The norm switch of Paddle's backbones, called inside a compact method:
  `norm_layer('bn', frozen, train, name='bn2a_branch2a')(x)`.

  'affine' -> AffineChannel (frozen: stop_gradient on scale/bias);
  'bn' / 'sync_bn' -> FrozenBatchNorm when frozen (running stats), else a training
  nn.BatchNorm (momentum 0.9, eps 1e-5). sync_bn equals bn here: statistics are taken
  over the whole batch the jitted step sees, i.e. across a sharded batch.
  """
  if norm == 'affine':
    return AffineChannel(frozen=frozen, dtype=dtype, name=name)
  if norm in ('bn', 'sync_bn'):
    if frozen:
      return FrozenBatchNorm(dtype=dtype, name=name)
    bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, dtype=jnp.float32, name=name)
    return lambda x: bn(x).astype(dtype)
  raise ValueError(f'unknown norm {norm!r}; expected one of {NORMS}')
