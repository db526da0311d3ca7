"""SSD's multibox head: fluid.layers.multi_box_head's convolutions as PaddleDetection
597145c's MultiBoxHead called it (kernel_size 1, pad 0, stride 1: one 1x1 conv with bias
for the box deltas and one for the class logits per feature map).

Outputs are flattened NHWC, [N, H * W * P, 4] and [N, H * W * P, C + 1], in the order of
detx.ops.priors.prior_box's [H, W, P] priors (Paddle transposes NCHW to NHWC before its
reshape, the same order).

Names: multi_box_head gives its convs fluid's automatic names, `conv2d_<k>.w_0` /
`.b_0`, with k counted over every conv2d layer of the program in creation order. In
SSD MobileNet-V1 the backbone makes 35 (conv1, 13 x (dw, sep), 4 x 2 extra) first, so
layer i's loc conv is conv2d_{35 + 2i} and its conf conv conv2d_{36 + 2i}; the flax
modules carry those names (`first_conv` sets 35 for other backbones). Derived from
fluid's unique_name counting, not checked against the released checkpoint.
Init: fluid's conv2d default, normal(0, sqrt(2 / (k * k * C_in))), bias 0.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx.models.layers import Conv, Dtype

paddle_conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')  # untruncated


class MultiBoxHead(nn.Module):
  num_outputs: int                 # classes + background
  priors_per_cell: Sequence[int]   # per feature map
  first_conv: int = 35
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats):
    locs, confs = [], []
    for i, (x, p) in enumerate(zip(feats, self.priors_per_cell)):
      k = self.first_conv + 2 * i
      kw = dict(kernel_size=(1, 1), dtype=self.dtype, kernel_init=paddle_conv_init,
                bias_init=jax.nn.initializers.zeros)
      loc = Conv(p * 4, name=f'conv2d_{k}', **kw)(x)
      conf = Conv(p * self.num_outputs, name=f'conv2d_{k + 1}', **kw)(x)
      n = x.shape[0]
      locs.append(loc.reshape(n, -1, 4))
      confs.append(conf.reshape(n, -1, self.num_outputs))
    return (jnp.concatenate(locs, 1).astype(jnp.float32),
            jnp.concatenate(confs, 1).astype(jnp.float32))
