"""The optimizer and its parameter rules (Paddle's ParamAttr: weight decay and
per-parameter learning-rate multipliers), one home for every family."""
import dataclasses
from typing import Callable

import jax
import optax

from detx import schedules


@dataclasses.dataclass(frozen=True)
class ParamRules:
  """How the optimizer treats each parameter, as Paddle's ParamAttr did.

  decay_mask(params) -> bool pytree: which parameters get the global L2.
  lr_mult(params) -> float pytree or None: per-parameter lr multiplier
  (2.0 for Detectron-style biases, 0.0 for frozen parameters); None = all 1.
  paddle: detx.weights.paddle name rules mapping the variables to Paddle's parameter
  names (model.pretrained, the zoo checkpoints); () = none known.
  """
  decay_mask: Callable
  lr_mult: Callable | None = None
  paddle: tuple = ()


def path_names(path) -> list[str]:
  return [getattr(k, 'key', str(k)) for k in path]


def kernel_decay_mask(params):
  """The zoo's L2: conv / fc kernels only. Biases (Detectron: no decay; YOLOv3's output
  bias), norm scales and offsets (norm_decay 0) are not decayed."""
  return jax.tree_util.tree_map_with_path(lambda p, _: path_names(p)[-1] == 'kernel', params)


def lr_multipliers(backbone_trainable: Callable, bias_mult: float = 1.0,
                   freeze_norm: bool = False, stage_mult: dict | None = None) -> Callable:
  """Per-parameter learning rates as a function of the params tree:
  - under `backbone`: 1, or 0 where `backbone_trainable(backbone_params)` is False
    (frozen stages and norms);
  - elsewhere: `bias_mult` for biases (Detectron's 2), 0 for frozen norms' scale and
    offset (`freeze_norm`: also the C4 box head's res5);
  - under a top-level module named in `stage_mult`: its multiplier for weights and
    biases alike, in place of `bias_mult` (Paddle's `wb_scalar`, e.g. Cascade's
    {'bbox_head_2': 2}: fc6_2_w and fc6_2_b both at lr x2)."""
  stage_mult = dict(stage_mult or {})

  def fn(params):
    def rule(path, _):
      names = path_names(path)
      if freeze_norm and len(names) >= 2 and names[-2].startswith('bn') and \
          names[-1] in ('scale', 'bias'):
        return 0.0
      if names[0] in stage_mult:
        return stage_mult[names[0]]
      return bias_mult if names[-1] == 'bias' else 1.0

    out = dict(jax.tree_util.tree_map_with_path(rule, params))
    if 'backbone' in params:
      out['backbone'] = jax.tree.map(lambda t: 1.0 if t else 0.0,
                                     backbone_trainable(params['backbone']))
    return out
  return fn


def make_optimizer(config, rules: ParamRules):
  """Optional global-norm gradient clipping (optim.clip_norm, 0 = off, as the zoo),
  coupled L2, RMSProp when optim.name is 'rmsprop' (optim.rho, optim.epsilon), momentum,
  then the per-parameter lr multipliers of `rules`; the scheduled lr is applied in the
  step. Returns (optax transform, lr function)."""
  lr_fn = schedules.learning_rate(config.optim.base_lr, config.optim.schedule, config.train.steps)
  clip = float(config.optim.clip_norm)
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  parts.append(optax.add_decayed_weights(config.optim.weight_decay, mask=rules.decay_mask))
  if config.optim.get('name', 'momentum') == 'rmsprop':
    # Paddle 1.5 RMSPropOptimizer: ms = rho ms + (1 - rho) g^2 from 0, step g / sqrt(ms + eps)
    parts.append(optax.scale_by_rms(config.optim.rho, config.optim.epsilon, eps_in_sqrt=True))
  if config.optim.momentum:
    parts.append(optax.trace(decay=config.optim.momentum))
  if rules.lr_mult is not None:
    parts.append(_scale_by_tree(rules.lr_mult))
  return optax.chain(*parts), lr_fn


def _scale_by_tree(mult_fn):
  def init(params):
    return optax.EmptyState()

  def update(updates, state, params=None):
    return jax.tree.map(lambda u, m: u * m, updates, mult_fn(updates)), state
  return optax.GradientTransformation(init, update)
