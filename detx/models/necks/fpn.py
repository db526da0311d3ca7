"""Feature Pyramid Network with PaddleDetection's layout and parameter names
(ppdet/modeling/backbones/fpn.py, MID).

Input: {level: NHWC feature} from the backbone (res{level}_sum), finest level = min_level.
Output: {level: NHWC feature with num_channels} for min_level..max_level.

- Coarsest input C_top: 1x1 conv `fpn_inner_res{top}_sum`.
- Every finer input C_l: 1x1 lateral `fpn_inner_res{l}_sum_lateral` + nearest 2x
  upsampling of the level above. Paddle resizes to exactly 2x the upper map and so needs
  inputs padded to a multiple of 32; for other sizes (odd maps, where the upper map is
  ceil(h/2)) the upsampled map is cropped to the lateral's size (edge-padded if ever
  smaller), which equals running on the padded input and cropping.
- 3x3 output conv `fpn_res{l}_sum` per input level.
- Extra levels above the backbone's top:
  - has_extra_convs=False (R-CNN FPN, levels 2-6): P6 = 1x1 max-pool, stride 2, of P5
    (`x[:, ::2, ::2]`), only when max_level - min_level == number of inputs;
  - has_extra_convs=True (RetinaNet, levels 3-7): P6 = 3x3/2 conv `fpn_6` on C5 (the raw
    backbone output), P7 = 3x3/2 conv `fpn_7` on relu(P6), ...; extra_from='p5'
    (PaddleDetection 2.x's RetinaNet, FPN use_c5=False): P6 from P5 (256 -> 256).
- Init: Paddle's Xavier(fan_out=fan): uniform(+-sqrt(6 / (fan_in + fan))), fan_in =
  kh*kw*in and fan = in for the 1x1 convs, kh*kw*in for the 3x3 ones; biases 0.
  (Paddle also gives the biases lr x2 and no weight decay: an optimizer concern.)
- Under detx.models.extent (Paddle's eval geometry on bucketed batches) the maps the 3x3
  convs and the heads read are zeroed beyond each image's extent.
"""
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx.models import extent
from detx.models.layers import Conv, Dtype, upsample_nearest


def paddle_xavier(fan_out: int):
  """Paddle's Xavier(uniform=True, fan_out=fan_out) for an HWIO kernel."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for d in shape[:-1]:
      fan_in *= d
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


def match_size(x, height: int, width: int):
  """Crop (or edge-pad) an NHWC map to height x width at the bottom/right."""
  x = x[:, :height, :width]
  ph, pw = height - x.shape[1], width - x.shape[2]
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  return x


class FPN(nn.Module):
  num_channels: int = 256
  min_level: int = 2
  max_level: int = 6
  has_extra_convs: bool = False
  dtype: Dtype = jnp.float32
  extra_from: str = 'c5'  # the first extra conv's input: 'c5' (the zoo) or 'p5' (2.x)

  def _conv(self, x, kernel: int, stride: int, fan: int, name: str):
    p = (kernel - 1) // 2
    return Conv(self.num_channels, (kernel, kernel), (stride, stride),
                   padding=((p, p), (p, p)), kernel_init=paddle_xavier(fan),
                   bias_init=nn.initializers.zeros, dtype=self.dtype, name=name)(x)

  @nn.compact
  def __call__(self, feats: Mapping[int, jax.Array]):
    levels = sorted(feats)
    if levels[0] != self.min_level or levels != list(range(levels[0], levels[-1] + 1)):
      raise ValueError(f'FPN(min_level={self.min_level}) needs consecutive input levels '
                       f'starting at {self.min_level}, got {levels}')
    top = levels[-1]
    if self.max_level < top:
      raise ValueError(f'max_level {self.max_level} is below the top input level {top}')
    x = feats[top].astype(self.dtype)
    inner = {top: self._conv(x, 1, 1, x.shape[-1], f'fpn_inner_res{top}_sum')}
    for lvl in reversed(levels[:-1]):
      c = feats[lvl].astype(self.dtype)
      lateral = self._conv(c, 1, 1, c.shape[-1], f'fpn_inner_res{lvl}_sum_lateral')
      up = match_size(upsample_nearest(inner[lvl + 1]), c.shape[1], c.shape[2])
      inner[lvl] = lateral + up
    inner = {lvl: extent.mask(x) for lvl, x in inner.items()}
    outs = {lvl: self._conv(inner[lvl], 3, 1, 9 * inner[lvl].shape[-1], f'fpn_res{lvl}_sum')
            for lvl in levels}
    if self.max_level > top:
      if self.has_extra_convs:
        if self.extra_from not in ('c5', 'p5'):
          raise ValueError(f"FPN extra_from must be 'c5' or 'p5', got {self.extra_from!r}")
        blob = feats[top].astype(self.dtype) if self.extra_from == 'c5' else extent.mask(outs[top])
        for lvl in range(top + 1, self.max_level + 1):
          blob_in = blob if lvl == top + 1 else nn.relu(blob)
          blob = extent.mask(self._conv(blob_in, 3, 2, 9 * blob_in.shape[-1], f'fpn_{lvl}'))
          outs[lvl] = blob
      elif self.max_level - self.min_level == len(levels):
        outs[top + 1] = outs[top][:, ::2, ::2]
      else:
        raise ValueError(f'levels {self.min_level}-{self.max_level} from inputs {levels}: '
                         'without extra convs only one subsampled level can be added')
    return {lvl: extent.mask(outs[lvl]) for lvl in sorted(outs)}


def retinanet_fpn(num_channels: int = 256, dtype: Dtype = jnp.float32) -> FPN:
  """RetinaNet's FPN (levels 3-7, P6/P7 convs on C5); feed it ResNet levels 3-5."""
  return FPN(num_channels, min_level=3, max_level=7, has_extra_convs=True, dtype=dtype)
