"""Mask R-CNN mask head and loss (PADDLEDET_SPEC §2.4).

`MaskHead` is PaddleDetection's MaskHead: `num_convs` 3x3 convs (256, ReLU,
`mask_inter_feat_{1..n}`; 4 on FPN, 0 on C4), a 2x2 stride-2 transposed conv (256, ReLU,
`conv5_mask`), and a 1x1 conv to one logit per class (`mask_fcn_logits`), all with
Paddle's MSRA-normal init (fan_in = conv_dim*9, in_channels*4 and num_classes) and zero
biases. FPN: [R, 14, 14, 256] RoI features -> [R, 28, 28, C]. C4: the res5 output of the
box head, [R, 7, 7, 2048] -> [R, 14, 14, C].

`conv5_mask` is an nn.ConvTranspose(transpose_kernel=False) with a 2x2 kernel and VALID
padding: detx.weights.paddle's DECONV layout converts Paddle's [in, out, 2, 2] kernel.
"""
import flax.linen as nn
import jax.numpy as jnp

from detx.models.heads.rpn import sigmoid_bce
from detx.models.layers import Dtype


def _msra(fan_in: int):
  return nn.initializers.normal((2.0 / fan_in) ** 0.5)


class MaskHead(nn.Module):
  num_classes: int
  num_convs: int = 4
  conv_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    for i in range(self.num_convs):
      x = nn.relu(nn.Conv(self.conv_dim, (3, 3), padding=((1, 1), (1, 1)),
                          kernel_init=_msra(self.conv_dim * 9), dtype=self.dtype,
                          name=f'mask_inter_feat_{i + 1}')(x))
    x = nn.relu(nn.ConvTranspose(self.conv_dim, (2, 2), (2, 2), padding='VALID',
                                 kernel_init=_msra(x.shape[-1] * 4), dtype=self.dtype,
                                 name='conv5_mask')(x))
    logits = nn.Conv(self.num_classes, (1, 1), kernel_init=_msra(self.num_classes),
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
