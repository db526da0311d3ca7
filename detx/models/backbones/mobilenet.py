"""MobileNet-V1 with PaddleDetection's layer layout and parameter names (597145c:
ppdet/modeling/backbones/mobilenet.py; the ImageNet MobileNetV1_pretrained.tar uses
the same names).

Layout (scale = Paddle's conv_group_scale, 1.0 in every zoo yml): conv1 3x3/2 (32), then
13 depthwise-separable blocks `<b>_dw` (3x3 depthwise, groups = channels) + `<b>_sep`
(1x1); every conv is conv (no bias, padding (k-1)//2) + BatchNorm + ReLU:

  conv2_1 64, conv2_2 128 /2, conv3_1 128, conv3_2 256 /2 -> level 3 (stride 8, 256)
  conv4_1 256, conv4_2 512 /2                            -> level 4 (stride 16, 512)
  conv5_1..conv5_5 512                                   -> SSD's level 4 (module11)
  conv5_6 1024 /2, conv6 1024                            -> level 5 (stride 32, 1024)

Without extra blocks (YOLOv3) Paddle returns [conv3_2, conv4_2, conv6]: level 4 is
conv4_2's output, *before* conv5_1..5 (those feed level 5 only). With extra blocks
(`extra_blocks=True`, SSD) Paddle returns (module11, module13, conv7_1..conv7_4):
level 4 is then conv5_5's output (19x19 at 300), level 5 conv6's (10x10), and the four
extra blocks, each a 1x1 `conv7_k_extra1` then a 3x3/2 `conv7_k_extra2` (filters
`extra_filters`, default 256/512, 128/256, 128/256, 64/128), give levels 6-9
(5x5, 3x3, 2x2, 1x1 at 300). SSD's multibox head takes levels 4-9 in that order.

Names: <conv>/conv/kernel <-> <conv>_weights; norm <conv>_bn: scale/bias <->
<conv>_bn_scale / _offset, batch_stats mean/var <-> _mean / _variance (the
detx.weights.paddle.RESNET_RULES patterns). Conv init: Paddle's MSRA (uniform,
fan_in). Norm: 'bn' / 'sync_bn' train BatchNorm (Paddle's MobileNet always does;
momentum 0.9, eps 1e-5); 'affine' or freeze_norm=True freeze it (detx only). Paddle's
MobileNet has no freeze_at; conv_learning_rate (SSD: 0.1) is not modelled here yet.
Weight decay as the ymls set it: the global L2 on conv kernels, norm_decay 0 on the
norms (detx.optim.kernel_decay_mask); Paddle 597145c has no separate conv_decay.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx.models.backbones.resnet import ConvNorm
from detx.models.layers import Dtype

# (block name, output channels, stride) of the depthwise-separable blocks.
BLOCKS = (('conv2_1', 64, 1), ('conv2_2', 128, 2), ('conv3_1', 128, 1), ('conv3_2', 256, 2),
          ('conv4_1', 256, 1), ('conv4_2', 512, 2),
          *((f'conv5_{i}', 512, 1) for i in range(1, 6)),
          ('conv5_6', 1024, 2), ('conv6', 1024, 1))
# The block whose output is each level (without / with the extra blocks).
LEVEL_OUTPUTS = {3: 'conv3_2', 4: 'conv4_2', 5: 'conv6'}
SSD_LEVEL_OUTPUTS = {4: 'conv5_5', 5: 'conv6'}
EXTRA_FILTERS = ((256, 512), (128, 256), (128, 256), (64, 128))
msra_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'uniform')


class DepthwiseSeparable(nn.Module):
  """`<name>_dw` 3x3 depthwise (stride) then `<name>_sep` 1x1, each conv + norm + ReLU."""
  features: int
  stride: int
  norm: str = 'bn'
  freeze_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(norm=self.norm, freeze_norm=self.freeze_norm, dtype=self.dtype,
              kernel_init=msra_init)
    c, n = x.shape[-1], self.name
    x = ConvNorm(c, 3, self.stride, groups=c, name=f'{n}_dw', norm_name=f'{n}_dw_bn',
                 **kw)(x, train)
    return ConvNorm(self.features, 1, name=f'{n}_sep', norm_name=f'{n}_sep_bn', **kw)(x, train)


class MobileNetV1(nn.Module):
  """NHWC MobileNet-V1 returning {level: feature} for `return_levels`: a subset of
  3..5, or of 4..9 with `extra_blocks` (see the module docstring for which layer
  each level is). remat: recompute each block's activations in the backward pass."""
  scale: float = 1.0
  norm: str = 'bn'
  freeze_norm: bool = False
  return_levels: Sequence[int] = (3, 4, 5)
  extra_blocks: bool = False
  extra_filters: Sequence[Sequence[int]] = EXTRA_FILTERS
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    outputs = dict(SSD_LEVEL_OUTPUTS) if self.extra_blocks else dict(LEVEL_OUTPUTS)
    if self.extra_blocks:
      outputs.update({6 + k: f'conv7_{k + 1}' for k in range(len(self.extra_filters))})
    if not self.return_levels or not set(self.return_levels) <= set(outputs):
      raise ValueError(f'return_levels must be a non-empty subset of {sorted(outputs)} '
                       f'(extra_blocks={self.extra_blocks}), got {self.return_levels}')
    wanted = {outputs[l]: l for l in self.return_levels}
    kw = dict(norm=self.norm, freeze_norm=self.freeze_norm, dtype=self.dtype)
    x = ConvNorm(int(32 * self.scale), 3, 2, name='conv1', norm_name='conv1_bn',
                 kernel_init=msra_init, **kw)(x.astype(self.dtype), train)
    block_cls = nn.remat(DepthwiseSeparable, static_argnums=(2,)) if self.remat \
        else DepthwiseSeparable
    outs = {}
    last = max(wanted, key=lambda name: list(outputs.values()).index(name))
    for name, c, s in BLOCKS:
      x = block_cls(int(c * self.scale), s, name=name, **kw)(x, train)
      if name in wanted:
        outs[wanted[name]] = x
      if name == last:
        return outs
    for k, (c1, c2) in enumerate(self.extra_filters):
      n = f'conv7_{k + 1}'
      x = ConvNorm(int(c1), 1, name=f'{n}_extra1', norm_name=f'{n}_extra1_bn',
                   kernel_init=msra_init, **kw)(x, train)
      x = ConvNorm(int(c2), 3, 2, name=f'{n}_extra2', norm_name=f'{n}_extra2_bn',
                   kernel_init=msra_init, **kw)(x, train)
      if n in wanted:
        outs[wanted[n]] = x
      if n == last:
        return outs
    return outs


def trainable_mask(params, freeze_norm: bool = False):
  """Bool pytree over MobileNet params: all True (Paddle freezes nothing), except the
  norms' scale/bias when freeze_norm."""
  def rule(path, _):
    names = [getattr(k, 'key', str(k)) for k in path]
    return not (freeze_norm and len(names) >= 2 and names[-2].endswith('_bn')
                and names[-1] in ('scale', 'bias'))
  return jax.tree_util.tree_map_with_path(rule, params)
