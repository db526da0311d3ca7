"""Necks by name, from a `model.neck` sub-config.

  model.neck = dict(name='fpn', channels=256, min_level=2, max_level=6, extra_convs=False)
  model.neck = dict(name='fpn', ..., extra_convs=True, extra_from='c5')  # RetinaNet; 'p5': 2.x
  model.neck = dict(name='none')   # C4: the backbone's res4 feeds the heads directly

`build(cfg, dtype)` returns a module mapping {level: feature} to {level: feature}, or
None for 'none'; `input_levels(cfg)` the backbone levels it reads.
"""
import jax.numpy as jnp

from detx.models.necks.fpn import FPN

NAMES = ('fpn', 'none')


def _check(cfg):
  if cfg.name not in NAMES:
    raise ValueError(f'unknown model.neck.name {cfg.name!r}; known: {", ".join(NAMES)}')


def build(cfg, dtype=jnp.float32):
  _check(cfg)
  if cfg.name == 'none':
    return None
  return FPN(cfg.channels, cfg.min_level, cfg.max_level, cfg.extra_convs, dtype=dtype,
             extra_from=cfg.get('extra_from', 'c5'))


def input_levels(cfg, default=(4,)) -> tuple[int, ...]:
  """FPN: its levels up to the backbone's top (5); none: `default`."""
  _check(cfg)
  if cfg.name == 'none':
    return tuple(default)
  return tuple(range(cfg.min_level, min(cfg.max_level, 5) + 1))
