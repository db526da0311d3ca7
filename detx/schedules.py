"""Learning-rate schedules and the optimizer, as PaddleDetection configured them.

A schedule is linear warmup followed by piecewise-constant decay (x gamma at each
milestone). The zoo's schedules are stated for their reference length; when
`train.steps` differs, milestones and warmup scale with it unless set explicitly.
"""
import jax.numpy as jnp
import ml_collections

# name: (reference total steps, milestones, warmup steps, warmup start factor)
# at the zoo's reference global batch (see ../shared/reference/ZOO.md).
PRESETS = {
    '1x': (90000, (60000, 80000), 500, 1 / 3),        # batch 16, lr 0.02
    '1x_b8': (180000, (120000, 160000), 500, 1 / 3),  # batch 8, lr 0.01
    '2x': (180000, (120000, 160000), 500, 1 / 3),
    '2x_b8': (360000, (240000, 320000), 500, 1 / 3),
    's1x': (260000, (200000, 240000), 1000, 0.1),     # the "1.44x" SENet154 rows
    '270e': (500200, (400000, 450000), 4000, 0.0),    # YOLOv3 COCO, batch 64
    'yolo_voc': (70000, (55000, 62000), 1000, 0.0),
    '120e': (28000, (10000, 15000, 20000, 25000), 0, 1.0),  # SSD MobileNet VOC, batch 32
}
# Presets whose lr is not a geometric decay: base_lr x these factors between milestones
# (SSD's PiecewiseDecay values 1e-3, 5e-4, 2.5e-4, 1e-4, 1e-5 at base_lr 1e-3).
LR_FACTORS = {'120e': (1.0, 0.5, 0.25, 0.1, 0.01)}


def schedule_config(preset: str) -> ml_collections.ConfigDict:
  """The `optim.schedule` block of a config, from a preset name."""
  ref_steps, milestones, warmup, factor = PRESETS[preset]
  return ml_collections.ConfigDict(dict(
      preset=preset, ref_steps=ref_steps, ref_milestones=tuple(milestones),
      ref_warmup=warmup, warmup_factor=factor,
      milestones=(), warmup_steps=-1, gamma=0.1, lr_values=(),
      lr_factors=LR_FACTORS.get(preset, ())))


def resolve(sched: ml_collections.ConfigDict, total_steps: int):
  """Returns (warmup_steps, milestones) for a run of `total_steps`."""
  ratio = total_steps / sched.ref_steps
  warmup = sched.warmup_steps if sched.warmup_steps >= 0 else int(round(sched.ref_warmup * ratio))
  milestones = tuple(sched.milestones) or tuple(int(round(m * ratio)) for m in sched.ref_milestones)
  return warmup, milestones


def learning_rate(base_lr: float, sched: ml_collections.ConfigDict, total_steps: int):
  """Paddle's LinearWarmup(PiecewiseDecay) as a function of the (0-based) step: lr_values
  when set, else base_lr x lr_factors (the preset's) or x gamma^i."""
  warmup, milestones = resolve(sched, total_steps)
  factors = tuple(sched.get('lr_factors', ())) or tuple(
      sched.gamma ** i for i in range(len(milestones) + 1))
  values = tuple(sched.lr_values) or tuple(base_lr * f for f in factors)
  if len(values) != len(milestones) + 1 and milestones:
    from detx.errors import ConfigError
    raise ConfigError(f'optim.schedule: {len(values)} lr values (lr_values / lr_factors) for '
                      f'{len(milestones)} milestones; expected {len(milestones) + 1}')
  bounds = jnp.asarray(milestones or (total_steps + 1,), jnp.int32)
  table = jnp.asarray(values if milestones else values[:1] * 2, jnp.float32)
  start = values[0] * sched.warmup_factor

  def lr(step):
    decayed = table[jnp.sum(step >= bounds)]
    if warmup <= 0:
      return decayed
    ramp = start + (values[0] - start) * step / warmup
    return jnp.where(step < warmup, ramp, decayed)
  return lr
