"""DarkNet53 (YOLOv3), Paddle's layer layout and parameter names."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from detx.models.layers import ConvBN, Dtype

DARKNET53_DEPTHS = (1, 2, 8, 8, 4)


class DarkNet(nn.Module):
  """DarkNet backbone returning {level: stage output} (stride 2^level) for
  `return_levels` (YOLOv3: 3, 4, 5).

  depths=(1,2,8,8,4) and width=1.0 is DarkNet53 (256/512/1024 channels out);
  smaller depths/width give the quickstart's tiny variant. remat=True recomputes
  the residual blocks' activations in the backward pass instead of storing them.
  """
  depths: Sequence[int] = DARKNET53_DEPTHS
  width: float = 1.0
  return_levels: Sequence[int] = (3, 4, 5)
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    ch = lambda c: max(8, int(c * self.width))
    x = ConvBN(ch(32), 3, 1, dtype=self.dtype, name='yolo_input')(x, train)
    x = ConvBN(2 * ch(32), 3, 2, dtype=self.dtype, name='yolo_input.downsample')(x, train)
    block_conv = nn.remat(ConvBN, static_argnums=(2,)) if self.remat else ConvBN
    outs = {}
    for s, depth in enumerate(self.depths):
      c = ch(32 * 2 ** s)
      for b in range(depth):
        y = block_conv(c, 1, dtype=self.dtype, name=f'stage.{s}.{b}.0')(x, train)
        y = block_conv(2 * c, 3, dtype=self.dtype, name=f'stage.{s}.{b}.1')(y, train)
        x = x + y
      if s + 1 in self.return_levels:
        outs[s + 1] = x
      if s < len(self.depths) - 1:
        x = ConvBN(2 * ch(32 * 2 ** (s + 1)), 3, 2, dtype=self.dtype,
                   name=f'stage.{s}.downsample')(x, train)
    return outs
