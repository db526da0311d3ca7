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


def _taps_pay(g, w_shape):
  """Whether the kernel gradient is worth doing as tap matmuls (see TAPS_MIN_WORK)."""
  kh, kw, ci, co = w_shape
  return kh * kw == 1 or g.shape[0] * g.shape[1] * g.shape[2] * ci * co >= TAPS_MIN_WORK


def _kernel_grad(x, g, w_shape, strides, padding):
  kh, kw, ci, co = w_shape
  n, ho, wo, _ = g.shape
  if not _taps_pay(g, w_shape):
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


def _kernel_grad_f32(x, g, w_shape, strides, padding):
  """The kernel gradient of a plain NHWC/HWIO conv as one conv accumulated and returned
  in float32: x's channels are its batch, the images its features, g its kernel."""
  kh, kw = w_shape[:2]
  pads = []
  for n, o, k, s, (lo, hi) in zip(x.shape[1:3], g.shape[1:3], (kh, kw), strides, padding):
    pads.append((lo, hi - (n + lo + hi - k - (o - 1) * s)))  # rows no output reads: dropped
  dn = lax.ConvDimensionNumbers(lhs_spec=(3, 0, 1, 2), rhs_spec=(3, 0, 1, 2),
                                out_spec=(2, 3, 0, 1))
  return lax.conv_general_dilated(x, g, (1, 1), pads, rhs_dilation=strides,
                                  dimension_numbers=dn, preferred_element_type=jnp.float32)


def _input_grad_f32(x_shape, w, g, strides, padding):
  """The input gradient of a plain NHWC/HWIO conv, accumulated and returned in float32:
  the stride-dilated cotangent correlated with the flipped, in/out-swapped kernel."""
  kh, kw = w.shape[:2]
  pads = []
  for n, o, k, s, (lo, _) in zip(x_shape[1:3], g.shape[1:3], (kh, kw), strides, padding):
    pads.append((k - 1 - lo, n - 1 - (o - 1) * s + lo))
  wt = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
  return lax.conv_general_dilated(g, wt, (1, 1), pads, lhs_dilation=strides,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv2d(x, w, strides, padding, out_dtype=None, compute_dtype=None):
  """NHWC x HWIO convolution; `padding` is ((top, bottom), (left, right)); out_dtype:
  the accumulation and output dtype (None: the inputs'). compute_dtype (mixed
  precision): x and w are cast to it here, and the input gradient is returned in x's
  own dtype unrounded (see conv_general_dilated)."""
  return _fwd(x, w, strides, padding, out_dtype, compute_dtype)[0]


def _fwd(x, w, strides, padding, out_dtype, compute_dtype):
  like = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))
  if compute_dtype is not None:
    x, w = x.astype(compute_dtype), w.astype(compute_dtype)
  return _plain(x, w, strides, padding, out_dtype), (x, w, like)


def _bwd(strides, padding, out_dtype, compute_dtype, res, g):
  x, w, (x_like, w_like) = res
  g = g.astype(x.dtype)  # a float32 output's cotangent: the gradients run in the inputs' dtype
  if compute_dtype is None:
    dx = _input_grad(x, w, g, strides, padding)
  elif w.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0)):
    dx = jnp.dot(g, w[0, 0].T, preferred_element_type=jnp.float32)
  else:
    dx = _input_grad_f32(x.shape, w, g, strides, padding)
  if compute_dtype is None or (jax.default_backend() == 'cpu' and _taps_pay(g, w.shape)):
    dw = _kernel_grad(x, g, w.shape, strides, padding)  # mixed: float32 tap matmuls
  else:
    dw = _kernel_grad_f32(x, g, w.shape, strides, padding)
  return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


conv2d.defvjp(_fwd, _bwd)


def _is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups):
  if lhs.ndim != 4 or groups != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return dn == _NHWC


def _is_depthwise(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups):
  """An NHWC/HWIO depthwise conv (one kernel per input channel, multiplier 1)."""
  if lhs.ndim != 4 or rhs.shape[2] != 1 or groups != lhs.shape[-1] or groups != rhs.shape[-1]:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC


def depthwise_taps(x, w, strides, padding, out_dtype=None):
  """A depthwise conv as kh*kw shifted multiply-adds, accumulated in float32: its
  gradients are elementwise too. XLA's CPU backend runs a grouped conv's gradients far
  below its forward (SSD MobileNet-V1 at 300, batch 8: backward 4.6x the forward)."""
  kh, kw = w.shape[:2]
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), padding[0], padding[1], (0, 0)))
  out_hw = tuple((xp.shape[1 + a] - k) // s + 1 for a, (k, s) in enumerate(zip((kh, kw), strides)))
  wf = w.astype(jnp.float32)
  y = sum(_tap(xp, i, j, out_hw, strides) * wf[i, j, 0] for i in range(kh) for j in range(kw))
  return y.astype(out_dtype or w.dtype)


def _pads(lhs, rhs, window_strides, padding):
  """((top, bottom), (left, right)) as ints, from lax's padding argument."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return tuple((int(a), int(b)) for a, b in padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, compute_dtype=None):
  """`lax.conv_general_dilated`, with matmul gradients for plain 2-D convs on the CPU.

  Mixed precision (bf16 training; detx.models.layers passes float32 inputs with a bf16
  kernel): the conv runs in the kernel's dtype, and for plain 2-D convs, on every
  backend, the input gradient is accumulated and returned in the input's float32.
  Rounded to bf16 (2**-9 of its size), it went on into the BatchNorm backward before
  it, which cancels most of a cotangent (it subtracts the per-channel mean and the
  projection on the normalised input). With this and float32 ConvBN outputs the
  quickstart's bf16 AP50 median rose from 0.244 to 0.348 (docs/bf16.md).

  compute_dtype (what detx.models.layers passes in bf16: float32 input and kernel): both
  are cast to it here, and for plain 2-D convs the kernel gradient too is accumulated
  and returned in float32, not rounded to bf16 on its way to the float32 parameter."""
  if compute_dtype is not None and jnp.dtype(compute_dtype) == rhs.dtype:
    compute_dtype = None  # the kernel is already in it: the mixed path below
  mixed = lhs.dtype != rhs.dtype or compute_dtype is not None
  if (jax.default_backend() == 'cpu' and batch_group_count == 1 and precision is None
      and _is_depthwise(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count)):
    if compute_dtype is not None:
      lhs, rhs = lhs.astype(compute_dtype), rhs.astype(compute_dtype)
    return depthwise_taps(lhs, rhs, tuple(int(s) for s in window_strides),
                          _pads(lhs, rhs, window_strides, padding), preferred_element_type)
  plain = (batch_group_count == 1 and precision is None
           and _is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                            feature_group_count))
  if not plain or not (mixed or jax.default_backend() == 'cpu'):
    if compute_dtype is not None:
      rhs = rhs.astype(compute_dtype)
    return lax.conv_general_dilated(
        lhs.astype(rhs.dtype), rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
  padding = _pads(lhs, rhs, window_strides, padding)
  return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), padding,
                preferred_element_type, (compute_dtype or rhs.dtype) if mixed else None)
