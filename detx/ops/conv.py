"""2-D convolution with matmul gradients on the CPU.

XLA's CPU backend computes a convolution's kernel gradient as another convolution whose
"batch" is the image plane, and that runs 3-10x below the forward conv's speed: on an
800x1344 Faster R-CNN step the kernel gradients took 12 of 16 s. Written as matmuls over
the image plane (one per kernel tap) they run at the forward conv's speed, and a 1x1
conv's input gradient is a matmul too.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature, so Flax takes it as
`nn.Conv(..., conv_general_dilated=conv_general_dilated)`: same parameters, same forward
values. The matmul gradients are used on the CPU backend for plain NHWC/HWIO convs
(no dilation, no groups); everything else, and every other backend (cuDNN and the TPU
compiler have good kernel gradients), is `lax.conv_general_dilated` unchanged.
"""
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

# A k x k kernel gradient is done as k*k matmuls only for big ones: below this many
# output pixels (batch included) x input channels x output channels, XLA's own kernel
# gradient is as fast or faster (measured on ResNet, FPN and mask-head shapes).
TAPS_MIN_WORK = 2**29

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def _plain(x, w, strides, padding, out_dtype=None):
  return lax.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  preferred_element_type=out_dtype)


def _tap(xp, i, j, out_hw, strides):
  """The input pixels that kernel tap (i, j) meets, one per output pixel."""
  (ho, wo), (sh, sw) = out_hw, strides
  n, _, _, c = xp.shape
  return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                   (1, sh, sw, 1))


def _kernel_grad(x, g, w_shape, strides, padding):
  kh, kw, ci, co = w_shape
  n, ho, wo, _ = g.shape
  if kh * kw > 1 and n * ho * wo * ci * co < TAPS_MIN_WORK:
    w0 = jnp.zeros(w_shape, x.dtype)
    return jax.vjp(lambda w: _plain(x, w, strides, padding), w0)[1](g)[0]
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  g2 = g.reshape(-1, co)
  taps = [lax.dot_general(_tap(xp, i, j, (ho, wo), strides).reshape(-1, ci), g2,
                          (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
          for i in range(kh) for j in range(kw)]
  return jnp.stack(taps).reshape(w_shape)


def _input_grad(x, w, g, strides, padding):
  kh, kw, ci, co = w.shape
  if (kh, kw) != (1, 1) or any(p != (0, 0) for p in padding):
    return jax.vjp(lambda x: _plain(x, w, strides, padding), x)[1](g)[0]
  dx = jnp.dot(g, w[0, 0].T, preferred_element_type=jnp.float32).astype(x.dtype)
  if strides == (1, 1):
    return dx
  # Strided 1x1: the gradient lands on every stride-th pixel, zeros elsewhere.
  (h, wd), (sh, sw) = x.shape[1:3], strides
  cfg = [(0, 0, 0), (0, h - ((g.shape[1] - 1) * sh + 1), sh - 1),
         (0, wd - ((g.shape[2] - 1) * sw + 1), sw - 1), (0, 0, 0)]
  return lax.pad(dx, jnp.zeros((), dx.dtype), cfg)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, w, strides, padding, out_dtype=None):
  """NHWC x HWIO convolution; `padding` is ((top, bottom), (left, right)); out_dtype:
  the accumulation and output dtype (None: the inputs')."""
  return _plain(x, w, strides, padding, out_dtype)


def _fwd(x, w, strides, padding, out_dtype):
  return _plain(x, w, strides, padding, out_dtype), (x, w)


def _bwd(strides, padding, out_dtype, res, g):
  x, w = res
  g = g.astype(x.dtype)  # a float32 output's cotangent: the gradients run in the inputs' dtype
  dx = _input_grad(x, w, g, strides, padding)
  dw = _kernel_grad(x, g, w.shape, strides, padding).astype(w.dtype)
  return dx.astype(x.dtype), dw


conv2d.defvjp(_fwd, _bwd)


def _is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups):
  if lhs.ndim != 4 or groups != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return dn == _NHWC


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated`, with matmul gradients for plain 2-D convs on the CPU."""
  fast = (jax.default_backend() == 'cpu' and batch_group_count == 1 and precision is None
          and _is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count))
  if not fast:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple((int(a), int(b)) for a, b in padding)
  return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), padding,
                preferred_element_type)
