"""Helpers for the scripts that run in the ppdet venv (never imported by detx's tests).

Under Paddle 3, PaddleDetection 2.6's R-CNN code passes 0-D tensors to paddle.concat
(rpn_head, post_process, cascade_head); `patch_concat()` reshapes them to [1] first.
"""
import json
import sys
from pathlib import Path

import numpy as np


def patch_concat():
  import paddle
  real = paddle.concat

  def concat(x, axis=0, name=None):
    if isinstance(x, (list, tuple)):
      x = [t.reshape([1]) if hasattr(t, 'ndim') and t.ndim == 0 else t for t in x]
    return real(x, axis=axis, name=name)

  paddle.concat = concat


def read_spec():
  """(spec, outdir) from argv[1]/spec.json."""
  outdir = Path(sys.argv[1])
  return json.loads((outdir / 'spec.json').read_text()), outdir


def randomize(module, seed: int, std: float = 0.05):
  """Every parameter and buffer of `module` drawn at random (BatchNorm variances in
  [0.5, 1.5], means and the rest normal), so no weight is a trivial 0 or 1."""
  import paddle
  rng = np.random.default_rng(seed)
  state = module.state_dict()
  new = {}
  for name, value in state.items():
    shape = list(value.shape)
    if name.endswith('_variance') or name.endswith('.var'):
      arr = rng.uniform(0.5, 1.5, shape)
    elif name.endswith('norm.weight') or name.endswith('bn.weight') or '.scale' in name:
      arr = rng.uniform(0.5, 1.5, shape)
    else:
      arr = rng.normal(0.0, std, shape)
    new[name] = paddle.to_tensor(arr.astype(np.asarray(value.numpy()).dtype))
  module.set_state_dict(new)
  return {k: v.numpy() for k, v in module.state_dict().items()}


def save(outdir: Path, name: str, **arrays):
  np.savez(outdir / f'{name}.npz', **{k: np.asarray(v) for k, v in arrays.items()})
