"""ResNet / ResNet-vd / ResNeXt backbones with PaddleDetection's layer layout and names.

Module names are Paddle's parameter prefixes, so `detx.weights.paddle.RESNET_RULES`
maps them mechanically:

  <conv>/conv/kernel   <-> <conv>_weights            e.g. res2a_branch2a_weights
  <conv>/<bn>/scale    <-> <bn>_scale                e.g. bn2a_branch2a_scale
  <conv>/<bn>/bias     <-> <bn>_offset
  batch_stats mean/var <-> <bn>_mean / <bn>_variance (norm='bn' only)

where <bn> = `paddle_norm_name(<conv>)` (Paddle's NameAdapter.fix_conv_norm_name:
conv1 -> bn_conv1, res2a_branch2a -> bn2a_branch2a, conv1_1 -> bnv1_1).

Layout (ppdet/modeling/backbones/resnet.py, resnext.py, name_adapter.py):
- stem: 7x7/2 conv `conv1` ('a', 'b'; ResNeXt: `res_conv1`) or three 3x3 convs
  `conv1_1..3` (32, 32, 64; stride 2 on the first) for 'c' and 'd'; then 3x3/2 max-pool, pad 1.
- bottleneck 1x1 -> 3x3 -> 1x1 (expansion 4); the stride sits on the first 1x1 for 'a',
  on the 3x3 otherwise. Basic blocks (3x3, 3x3) for depth 18/34.
- projection shortcut `<block>_branch1` when channels or stride change; for depth < 50
  also on res2a (Paddle's quirk). 'd': every projection shortcut outside res2 is a 2x2/2
  exclusive ceil-mode average pool followed by a stride-1 1x1 conv.
- blocks res{s}a, res{s}b, ...; stage 4 with more than 10 blocks (101, 152): res4a, res4b1, ...
- ResNeXt (groups > 1): bottleneck width groups*group_width*2^(s-2), output 256*2^(s-2)
  (x101_vd_64x4d: 256/512/1024/2048 both).
"""
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from detx.models import extent
from detx.models.layers import Dtype, conv_into_norm, norm_layer

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}
VARIANTS = ('a', 'b', 'c', 'd')

# Paddle's default conv initialiser: N(0, sqrt(2 / (kh * kw * in/groups))).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def paddle_norm_name(conv_name: str) -> str:
  """Paddle's name of the norm layer after conv `conv_name` (fix_conv_norm_name)."""
  return 'bn_' + conv_name if conv_name == 'conv1' else 'bn' + conv_name[3:]


def block_name(stage: int, index: int, count: int) -> str:
  """res2a, res2b, ...; res4a, res4b1, res4b2, ... when stage 4 has more than 10 blocks."""
  if stage == 4 and count > 10:
    return 'res4a' if index == 0 else f'res4b{index}'
  return f'res{stage}{chr(ord("a") + index)}'


def avg_pool_ceil_exclusive(x, window: int = 2, stride: int = 2):
  """NHWC average pool, pad 0, ceil_mode=True, exclusive (Paddle's pool2d defaults):
  the right/bottom partial windows are averaged over their valid pixels only (under
  detx.models.extent, the pixels inside each image's extent, as on the unpadded image)."""
  h, w = x.shape[1:3]
  out_h, out_w = -(-(h - window) // stride) + 1, -(-(w - window) // stride) + 1
  pad = ((0, 0), (0, (out_h - 1) * stride + window - h), (0, (out_w - 1) * stride + window - w),
         (0, 0))
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pad)  # scalar 0: differentiable sum
  inside = extent.valid((h, w))
  ones = jnp.ones((1, h, w, 1), x.dtype) if inside is None else inside[..., None].astype(x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, pad)
  return total / jnp.maximum(count, 1)


def max_pool_3x3_s2(x):
  """The stem max-pool: 3x3, stride 2, pad 1 (padding never wins the max)."""
  return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


class ConvNorm(nn.Module):
  """Conv (no bias, symmetric (k-1)//2 padding) + norm + optional ReLU; Paddle's _conv_norm.

  Named by the conv's Paddle prefix; children `conv` and the norm named `norm_name`
  (default `paddle_norm_name(self.name)`; SENet and MobileNet: `<conv>_bn`).
  """
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  relu: bool = True
  norm: str = 'affine'
  freeze_norm: bool = True
  dtype: Dtype = jnp.float32
  norm_name: str = ''
  kernel_init: Callable = conv_init

  @nn.compact
  def __call__(self, x, train: bool = False):
    p = (self.kernel - 1) // 2
    x = conv_into_norm(self.features, self.kernel, self.stride, ((p, p), (p, p)),
                       self.groups, self.dtype, 'conv', kernel_init=self.kernel_init)(x)
    x = norm_layer(self.norm, self.freeze_norm, train,
                   name=self.norm_name or paddle_norm_name(self.name), dtype=self.dtype)(x)
    return extent.mask(nn.relu(x) if self.relu else x)  # Paddle's eval geometry (extent.py)


def shortcut(x, features: int, stride: int, project: bool, avg_down: bool, name: str,
             train: bool, **kw):
  """Identity, or the `<block>_branch1` projection (avg_down, i.e. vd outside res2:
  2x2 exclusive ceil avg-pool, then a stride-1 1x1 conv). Call inside a compact method."""
  if not project:
    return x
  if avg_down:
    x, stride = avg_pool_ceil_exclusive(x), 1
  return ConvNorm(features, 1, stride, relu=False, name=name, **kw)(x, train)


class Block(nn.Module):
  """What every residual block shares: output `features`, `stride`, `first_stage` (res2:
  never the vd avg-pool), variant, norm. A block's compact __call__ computes its residual
  branch and returns `finish(self, x, y, ...)`."""
  features: int = 256
  stride: int = 1
  first_stage: bool = False
  variant: str = 'b'
  norm: str = 'affine'
  freeze_norm: bool = True
  dtype: Dtype = jnp.float32

  def conv_kw(self) -> dict:
    return dict(norm=self.norm, freeze_norm=self.freeze_norm, dtype=self.dtype)


def finish(block: Block, x, y, train: bool, name: str, force_project: bool = False, **kw):
  """Shortcut (projection `name` when channels or stride change; vd avg-pool outside
  res2) plus residual y, then ReLU. Call inside the block's compact method."""
  project = force_project or x.shape[-1] != block.features or block.stride != 1
  short = shortcut(x, block.features, block.stride, project,
                   block.variant == 'd' and not block.first_stage, name, train,
                   **kw, **block.conv_kw())
  return nn.relu(short + y)


class Bottleneck(Block):
  """1x1 (`width`) -> 3x3 (grouped for ResNeXt) -> 1x1 (`features`), plus shortcut, then
  ReLU. Named res{s}{x}; the stride sits on the first 1x1 for variant 'a'."""
  width: int = 64
  groups: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw, n = self.conv_kw(), self.name
    s1, s2 = (self.stride, 1) if self.variant == 'a' else (1, self.stride)
    y = ConvNorm(self.width, 1, s1, name=f'{n}_branch2a', **kw)(x, train)
    y = ConvNorm(self.width, 3, s2, groups=self.groups, name=f'{n}_branch2b', **kw)(y, train)
    y = ConvNorm(self.features, 1, relu=False, name=f'{n}_branch2c', **kw)(y, train)
    return finish(self, x, y, train, f'{n}_branch1')


class BasicBlock(Block):
  """3x3 -> 3x3 plus shortcut, then ReLU (depth 18/34). `quirk_project`: Paddle's
  res2a_branch1 projection even though channels match."""
  quirk_project: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw, n = self.conv_kw(), self.name
    y = ConvNorm(self.features, 3, self.stride, name=f'{n}_branch2a', **kw)(x, train)
    y = ConvNorm(self.features, 3, relu=False, name=f'{n}_branch2b', **kw)(y, train)
    return finish(self, x, y, train, f'{n}_branch1', self.quirk_project)


class ResNetStage(nn.Module):
  """One stage res{stage} (2..5): its blocks, the first with stride 2 (except res2).

  The R-CNN C4 box head ("ResNetC5") is `ResNetStage(stage=5, depth=..., variant=...)`
  applied to 14x14 RoI features (-> 7x7x2048); its parameters carry the same names as
  a backbone's res5, so Paddle's res5* files load into it unchanged. Subclasses
  (senet.SENetStage) change `check` and `block`.
  """
  stage: int
  depth: int = 50
  variant: str = 'b'
  groups: int = 1
  group_width: int = 64
  norm: str = 'affine'
  freeze_norm: bool = True
  dtype: Dtype = jnp.float32

  def check(self):
    if self.stage not in (2, 3, 4, 5):
      raise ValueError(f'stage must be 2..5, got {self.stage}')
    if self.depth not in BLOCKS:
      raise ValueError(f'depth must be one of {sorted(BLOCKS)}, got {self.depth}')
    if self.variant not in VARIANTS:
      raise ValueError(f'variant must be one of {VARIANTS}, got {self.variant!r}')

  def block(self, i: int, count: int):
    """(block class, its keyword arguments) of block i."""
    scale = 2 ** (self.stage - 2)
    if self.depth < 50:
      return BasicBlock, dict(features=64 * scale, quirk_project=self.stage == 2 and i == 0,
                              name=block_name(self.stage, i, count))
    width = 64 * scale if self.groups == 1 else self.groups * self.group_width * scale
    return Bottleneck, dict(features=256 * scale, width=width, groups=self.groups,
                            name=block_name(self.stage, i, count))

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check()
    count = BLOCKS[self.depth][self.stage - 2]
    for i in range(count):
      cls, kw = self.block(i, count)
      x = cls(stride=2 if i == 0 and self.stage != 2 else 1, first_stage=self.stage == 2,
              variant=self.variant, norm=self.norm, freeze_norm=self.freeze_norm,
              dtype=self.dtype, **kw)(x, train)
    return x


class ResNet(nn.Module):
  """NHWC ResNet backbone returning {level: feature} for `return_levels` (stride 2^level).

  depth 18/34/50/101/152; variant 'a'|'b'|'c'|'d' (Paddle's; 'd' = vd); norm
  'affine'|'bn'|'sync_bn'; freeze_norm: frozen norm (affine: stop_gradient on
  scale/bias; bn: running statistics and stop_gradient); freeze_at=k: stop_gradient on
  the outputs of stages <= k (stem = stage 1; 2 freezes stem and res2, as in the zoo).
  Paddle itself only stops gradients at res2..res5 outputs, so freeze_at=1 there freezes
  nothing, here it freezes the stem. groups > 1 gives ResNeXt (group_width per group).
  Stages past max(return_levels) are not built: return_levels=(4,) is the C4 backbone.
  remat: recompute each stage's activations in the backward pass (memory for compute).
  Subclasses (senet.SENet) change `STAGE`, `check`, `stem` and `stem_norm_name`.
  """
  depth: int = 50
  variant: str = 'b'
  norm: str = 'affine'
  freeze_norm: bool = True
  freeze_at: int = 2
  return_levels: Sequence[int] = (2, 3, 4, 5)
  groups: int = 1
  group_width: int = 64
  dtype: Dtype = jnp.float32
  remat: bool = False

  STAGE = ResNetStage

  def check(self):
    if not set(self.return_levels) <= {2, 3, 4, 5} or not self.return_levels:
      raise ValueError(f'return_levels must be a non-empty subset of 2..5, got {self.return_levels}')

  def stem(self):
    """(name, features, kernel, stride) of the stem convs."""
    if self.variant in ('c', 'd'):
      return (('conv1_1', 32, 3, 2), ('conv1_2', 32, 3, 1), ('conv1_3', 64, 3, 1))
    return (('res_conv1' if self.groups > 1 else 'conv1', 64, 7, 2),)

  def stem_norm_name(self, conv_name: str) -> str:
    return ''  # ConvNorm's default, paddle_norm_name

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.check()
    kw = dict(norm=self.norm, freeze_norm=self.freeze_norm, dtype=self.dtype)
    x = extent.mask(x.astype(self.dtype))
    for name, c, k, s in self.stem():
      x = ConvNorm(c, k, s, name=name, norm_name=self.stem_norm_name(name), **kw)(x, train)
    if self.freeze_at >= 1:
      x = jax.lax.stop_gradient(x)
    x = max_pool_3x3_s2(x)
    outs = {}
    stage_cls = nn.remat(self.STAGE, static_argnums=(2,)) if self.remat else self.STAGE
    for stage in range(2, max(self.return_levels) + 1):
      x = stage_cls(stage, self.depth, self.variant, self.groups, self.group_width,
                    name=f'res{stage}', **kw)(x, train)
      if stage <= self.freeze_at:
        x = jax.lax.stop_gradient(x)
      if stage in self.return_levels:
        outs[stage] = x
    return outs


def stage_of(top_level_name: str) -> int:
  """The stage a top-level ResNet child belongs to: conv1* / res_conv1 -> 1, res{s} -> s."""
  if top_level_name.startswith(('conv1', 'res_conv1')):
    return 1
  if top_level_name.startswith('res') and top_level_name[3:].isdigit():
    return int(top_level_name[3:])
  raise ValueError(f'not a ResNet child: {top_level_name!r}')


def trainable_mask(params, freeze_at: int = 2, freeze_norm: bool = True):
  """Pytree of bools over a ResNet's (or SENet's) params: False for what Paddle never
  updates (stages <= freeze_at; norm bn* / *_bn scale and bias when freeze_norm). Use it to mask the optimizer
  (weight decay included) so frozen parameters stay exactly as loaded."""
  def walk(tree, path):
    if not isinstance(tree, dict):
      if stage_of(path[0]) <= freeze_at:
        return False
      norm_name = path[-2] if len(path) >= 2 else ''
      is_norm = (norm_name.startswith('bn') or norm_name.endswith('_bn')) and \
          path[-1] in ('scale', 'bias')
      return not (freeze_norm and is_norm)
    return {k: walk(v, path + (k,)) for k, v in tree.items()}
  return walk(dict(params), ())


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
