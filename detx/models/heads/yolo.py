"""YOLOv3 head: three detection blocks from stride 32 down (Paddle's yolo_head layout)."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from detx.models.layers import Conv, ConvBN, Dtype, upsample_nearest


class YoloHead(nn.Module):
  """Returns one NHWC map per level, coarsest first: [N, H, W, A*(5+C)].

  Per anchor the channels are [tx, ty, tw, th, obj, cls...], as in Paddle.
  """
  num_classes: int
  anchors_per_level: Sequence[int] = (3, 3, 3)
  width: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats, train: bool):
    ch = lambda c: max(8, int(c * self.width))
    outs = []
    route = None
    for i, feat in enumerate(reversed(list(feats))):
      if route is not None:
        feat = jnp.concatenate([route, feat.astype(route.dtype)], axis=-1)
      c = ch(512 // 2 ** i)
      x = feat
      for j in range(2):
        x = ConvBN(c, 1, dtype=self.dtype, name=f'yolo_block.{i}.{j}.0')(x, train)
        x = ConvBN(2 * c, 3, dtype=self.dtype, name=f'yolo_block.{i}.{j}.1')(x, train)
      route = ConvBN(c, 1, dtype=self.dtype, name=f'yolo_block.{i}.2')(x, train)
      tip = ConvBN(2 * c, 3, dtype=self.dtype, name=f'yolo_block.{i}.tip')(route, train)
      out = YoloOutput(self.anchors_per_level[i] * (5 + self.num_classes),
                       dtype=self.dtype, name=f'yolo_output.{i}')(tip)
      outs.append(out.astype(jnp.float32))
      if i < len(feats) - 1:
        route = ConvBN(ch(256 // 2 ** i), 1, dtype=self.dtype,
                       name=f'yolo_transition.{i}')(route, train)
        route = upsample_nearest(route)
    return outs


class YoloOutput(nn.Module):
  """The 1x1 output conv with bias (Paddle: yolo_output.{i}.conv.weights/.bias)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return Conv(self.features, (1, 1), dtype=self.dtype, name='conv',
                   bias_init=jax.nn.initializers.zeros)(x)
