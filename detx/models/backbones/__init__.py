"""Backbones by name, from a `model.backbone` sub-config.

  model.backbone = dict(name='resnet', depth=50, variant='b', groups=1, group_width=64,
                        norm='affine', freeze_norm=True, freeze_at=2)
  model.backbone = dict(name='darknet', depths=(1, 2, 8, 8, 4), width=1.0)
  model.backbone = dict(name='senet', depth=152, variant='d', groups=64, group_width=4,
                        norm='affine', freeze_norm=True, freeze_at=2)
  model.backbone = dict(name='mobilenet', scale=1.0, norm='sync_bn', freeze_norm=False,
                        extra_blocks=False, extra_filters=((256, 512), ...))

`build(cfg, levels, ...)` returns a module mapping an NHWC image to {level: feature}
(stride 2^level) for `levels`; `trainable(cfg)` the matching bool mask over its params
(frozen stages and norms False), used by the optimizer's lr multipliers.
Adding a backbone: a module here returning {level: feature}, one row in BUILDERS.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from detx.models.backbones import darknet, mobilenet, resnet, senet


def _resnet(cfg, levels, dtype, remat):
  return resnet.ResNet(cfg.depth, cfg.variant, cfg.norm, cfg.freeze_norm, cfg.freeze_at,
                       tuple(levels), groups=cfg.groups, group_width=cfg.group_width,
                       dtype=dtype, remat=remat)


def _darknet(cfg, levels, dtype, remat):
  return darknet.DarkNet(tuple(cfg.depths), cfg.width, tuple(levels), dtype=dtype, remat=remat)


def _senet(cfg, levels, dtype, remat):
  return senet.SENet(cfg.depth, cfg.variant, cfg.norm, cfg.freeze_norm, cfg.freeze_at,
                     tuple(levels), groups=cfg.groups, group_width=cfg.group_width,
                     dtype=dtype, remat=remat)


def _mobilenet(cfg, levels, dtype, remat):
  return mobilenet.MobileNetV1(cfg.scale, cfg.norm, cfg.freeze_norm, tuple(levels),
                               cfg.extra_blocks, tuple(map(tuple, cfg.extra_filters)),
                               dtype=dtype, remat=remat)


BUILDERS = {'resnet': _resnet, 'darknet': _darknet, 'senet': _senet, 'mobilenet': _mobilenet}


def build(cfg, levels: Sequence[int], dtype=jnp.float32, remat: bool = False):
  """The backbone `cfg.name` returning features at `levels`."""
  if cfg.name not in BUILDERS:
    raise ValueError(f'unknown model.backbone.name {cfg.name!r}; known: {", ".join(BUILDERS)}')
  return BUILDERS[cfg.name](cfg, levels, dtype, remat)


def trainable(cfg) -> Callable:
  """backbone params -> bool pytree: False where the backbone is frozen."""
  if cfg.name in ('resnet', 'senet'):
    return lambda params: resnet.trainable_mask(params, cfg.freeze_at, cfg.freeze_norm)
  if cfg.name == 'mobilenet':
    return lambda params: mobilenet.trainable_mask(params, cfg.freeze_norm)
  return lambda params: jax.tree.map(lambda _: True, params)

