"""SENet-vd (the zoo's SENet154-vd): ResNeXt bottlenecks with squeeze-excitation, in
PaddleDetection's layout and parameter names (597145c: ppdet/modeling/backbones/senet.py,
which subclasses resnext.py / resnet.py; names from name_adapter.py's 'SEResNeXt' rules).

Layout (SENet(depth=152, groups=64, group_width=4, variant='d') in the zoo ymls):
- stem ('c', 'd'): three 3x3 convs conv1_1 (64, stride 2), conv1_2 (64), conv1_3 (128)
  (`_c1_out_chan_num = 128`); 'a'/'b': one 7x7/2 conv1 (128). Then 3x3/2 max-pool, pad 1.
- stages res2..res5 with resnet.BLOCKS[depth] blocks (152: 3, 8, 36, 3); stage filters
  256/512/1024/2048 at depth 152 (128/256/512/1024 below). With groups * group_width
  == 256 Paddle's bottleneck keeps every width at the stage filters (`expand = 1`):
  1x1 -> 3x3 grouped (stride here for b/c/d, on the 1x1 for 'a') -> 1x1, no ReLU;
  other group settings break Paddle's SE (its channel count no longer matches) and are
  refused here.
- SE on that residual, before the addition: global average pool -> fc (C/16, ReLU) ->
  fc (C, sigmoid) -> channel-wise scale; Paddle's fc init U(+-1/sqrt(fan_in)), zero bias.
- shortcut: identity, or a projection when channels or stride change; vd outside res2:
  2x2/2 ceil-mode exclusive avg-pool, then a stride-1 1x1 conv. Then add and ReLU.
- freeze_at / freeze_norm / norm as resnet.ResNet (the zoo: affine, frozen, freeze_at 2).

Names (block n = f'{stage + 2}_{i + 1}': res2's blocks are 4_1..4_3, res5's 7_1..7_3):
  conv1_1/conv/kernel             <-> conv1_1_weights (norm conv1_1_bn: _scale, _offset)
  conv{n}_x1, _x2, _x3            <-> conv4_1_x1_weights, conv4_1_x1_bn_scale, ...
  conv{n}_prj                     <-> the shortcut projection (conv4_1_prj_weights, ...)
  fc{n}_sqz/kernel, /bias         <-> fc4_1_sqz_weights, fc4_1_sqz_offset (and _exc)
so detx.weights.paddle.RESNET_RULES maps every variable. Flax paths are
backbone/res{s}/{n}/<Paddle prefix>/...: the stage containers res2..res5 keep
resnet.trainable_mask and the freeze logic of ResNet.

Departure: Paddle's SE fc offsets carry no regularizer of their own, so the global L2
(1e-4) reaches them; detx's optimizer decays kernels only (optim.kernel_decay_mask).
"""
import math
import flax.linen as nn
import jax
import jax.numpy as jnp

from detx.models import extent
from detx.models.backbones import resnet
from detx.models.backbones.resnet import ConvNorm
from detx.models.layers import Dense, Dtype

REDUCTION = 16  # SENet.reduction_ratio


def block_name(stage: int, index: int) -> str:
  """Paddle's SEResNeXt block name (fix_layer_warp_name): res2's first block is 4_1."""
  return f'{stage + 2}_{index + 1}'


def stage_filters(depth: int, stage: int) -> int:
  return (256 if depth >= 152 else 128) * 2 ** (stage - 2)


def _fc_init(fan_in: int):
  """fluid.initializer.Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def squeeze_excitation(x, name: str, dtype: Dtype):
  """Paddle's _squeeze_excitation; call inside a compact method (Dense `{name}_sqz`,
  `{name}_exc`)."""
  c = x.shape[-1]
  inside = extent.valid(x.shape[1:3])  # Paddle's eval geometry: the mean over the image
  if inside is None:
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
  else:
    s = jnp.sum(extent.mask(x).astype(jnp.float32), axis=(1, 2)) / jnp.maximum(
        jnp.sum(inside, axis=(1, 2)), 1)[:, None]
  s = nn.relu(Dense(c // REDUCTION, kernel_init=_fc_init(c), dtype=dtype,
                       name=f'{name}_sqz')(s))
  e = nn.sigmoid(Dense(c, kernel_init=_fc_init(c // REDUCTION), dtype=dtype,
                          name=f'{name}_exc')(s))
  # In float32: the gradient of the channel scale sums over the image plane.
  return (x.astype(jnp.float32) * e[:, None, None, :].astype(jnp.float32)).astype(dtype)


class SEBottleneck(resnet.Block):
  """conv{n}_x1 -> _x2 (grouped) -> _x3, SE (fc{n}), plus shortcut conv{n}_prj, ReLU.
  Named by its Paddle block name n (e.g. '4_1')."""
  groups: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, kw = self.name, self.conv_kw()
    conv = lambda name, *a, **k: ConvNorm(*a, name=name, norm_name=f'{name}_bn', **k, **kw)
    s1, s2 = (self.stride, 1) if self.variant == 'a' else (1, self.stride)
    y = conv(f'conv{n}_x1', self.features, 1, s1)(x, train)
    y = conv(f'conv{n}_x2', self.features, 3, s2, groups=self.groups)(y, train)
    y = conv(f'conv{n}_x3', self.features, 1, relu=False)(y, train)
    y = squeeze_excitation(y, f'fc{n}', self.dtype)
    return resnet.finish(self, x, y, train, f'conv{n}_prj', norm_name=f'conv{n}_prj_bn')


class SENetStage(resnet.ResNetStage):
  """Stage res{stage} (2..5) of an SENet: its SE bottlenecks, the first with stride 2
  (except res2)."""

  def check(self):
    pass  # SENet.check covers depth and variant

  def block(self, i: int, count: int):
    return SEBottleneck, dict(features=stage_filters(self.depth, self.stage),
                              groups=self.groups, name=block_name(self.stage, i))


class SENet(resnet.ResNet):
  """NHWC SENet backbone returning {level: feature} for `return_levels` (stride
  2^level); arguments as resnet.ResNet (depth 50/101/152; the zoo: 152, 'd', 64x4)."""
  depth: int = 152
  variant: str = 'd'
  groups: int = 64
  group_width: int = 4

  STAGE = SENetStage

  def check(self):
    if self.depth not in (50, 101, 152):
      raise ValueError(f'SENet depth must be 50, 101 or 152, got {self.depth}')
    if self.variant not in resnet.VARIANTS:
      raise ValueError(f'variant must be one of {resnet.VARIANTS}, got {self.variant!r}')
    if self.groups * self.group_width != 256:
      raise ValueError('SENet needs groups * group_width == 256 (Paddle keeps the stage '
                       f'width only then), got {self.groups} x {self.group_width}')
    super().check()

  def stem(self):
    if self.variant in ('c', 'd'):
      return (('conv1_1', 64, 3, 2), ('conv1_2', 64, 3, 1), ('conv1_3', 128, 3, 1))
    return (('conv1', 128, 7, 2),)

  def stem_norm_name(self, conv_name: str) -> str:
    return f'{conv_name}_bn'
