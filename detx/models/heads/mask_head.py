"""Mask R-CNN mask head and loss (PADDLEDET_SPEC §2.4).

`MaskHead` is PaddleDetection's MaskHead: `num_convs` 3x3 convs (256, ReLU,
`mask_inter_feat_{1..n}`; 4 on FPN, 0 on C4), a 2x2 stride-2 transposed conv (256, ReLU,
`conv5_mask`), and a 1x1 conv to one logit per class (`mask_fcn_logits`), all with
Paddle's MSRA-normal init (fan_in = conv_dim*9, in_channels*4 and num_classes) and zero
biases. FPN: [R, 14, 14, 256] RoI features -> [R, 28, 28, C]. C4: the res5 output of the
box head, [R, 7, 7, 2048] -> [R, 14, 14, C].

`conv5_mask` holds the variables of an nn.ConvTranspose(transpose_kernel=False) with a
2x2 kernel, stride 2 and VALID padding (detx.weights.paddle's DECONV layout converts
Paddle's [in, out, 2, 2] kernel) and computes the same thing as one matmul and a
depth-to-space (`Deconv2x2`): XLA's CPU kernel gradient of a transposed conv is ~40x
slower than its forward pass, which made Mask R-CNN's train step 5x slower.
"""
import flax.linen as nn
import jax.numpy as jnp

from detx.models.layers import Conv, Dtype
from detx.ops.losses import sigmoid_bce


def _msra(fan_in: int):
  return nn.initializers.normal((2.0 / fan_in) ** 0.5)


class Deconv2x2(nn.Module):
  """nn.ConvTranspose(features, (2, 2), (2, 2), padding='VALID') with the same
  variables ('kernel' [2, 2, in, out], 'bias'): out[2i + a, 2j + b] = x[i, j] @
  kernel[1 - a, 1 - b] + bias (the stride equals the kernel, so windows never overlap)."""
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (2, 2, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel = (v.astype(self.dtype) for v in (x, kernel[::-1, ::-1]))
    n, h, w, _ = x.shape
    y = jnp.einsum('nhwc,abco->nhawbo', x, kernel).reshape(n, 2 * h, 2 * w, self.features)
    return (y.astype(jnp.float32) + bias).astype(self.dtype)  # bias gradient summed in f32


class MaskHead(nn.Module):
  num_classes: int
  num_convs: int = 4
  conv_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    for i in range(self.num_convs):
      x = nn.relu(Conv(self.conv_dim, (3, 3), padding=((1, 1), (1, 1)),
                          kernel_init=_msra(self.conv_dim * 9), dtype=self.dtype,
                          name=f'mask_inter_feat_{i + 1}')(x))
    x = nn.relu(Deconv2x2(self.conv_dim, kernel_init=_msra(x.shape[-1] * 4),
                          dtype=self.dtype, name='conv5_mask')(x))
    logits = Conv(self.num_classes, (1, 1), kernel_init=_msra(self.num_classes),
                     dtype=self.dtype, name='mask_fcn_logits')(x)
    return logits.astype(jnp.float32)


def select_class(logits, classes):
  """logits [..., M, M, C], classes [...] -> [..., M, M] (the channel of each class)."""
  return jnp.take_along_axis(logits, classes[..., None, None, None], axis=-1)[..., 0]


def mask_loss(logits, targets, classes, valid):
  """Per-class sigmoid CE on the GT class channel only (Paddle's ignore_index -1 on the
  others), normalised by the number of supervised elements of the batch.

  logits [N, F, M, M, C], targets [N, F, M, M] in {0, 1}, classes [N, F] (background
  first), valid [N, F] (foreground RoIs).
  """
  sel = select_class(logits, classes)
  ce = sigmoid_bce(sel, targets.astype(jnp.float32))
  w = valid.astype(jnp.float32)[..., None, None]
  count = jnp.sum(valid.astype(jnp.float32)) * sel.shape[-1] * sel.shape[-2]
  return jnp.sum(ce * w) / jnp.maximum(count, 1.0)
