import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from detx import sharding, train
from detx.data import loader, pipelines
from detx.models.base import build_model
from tests.helpers import flat_params, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_fsdp_spec_splits_the_largest_divisible_axis():
  assert sharding.fsdp_spec((3, 3, 64, 128), 8) == jax.sharding.PartitionSpec(None, None, None, 'data')
  assert sharding.fsdp_spec((3, 3, 128, 60), 8) == jax.sharding.PartitionSpec(None, None, 'data')
  assert sharding.fsdp_spec((10,), 8) == jax.sharding.PartitionSpec()
  assert sharding.fsdp_spec((3, 3, 64, 128), 1) == jax.sharding.PartitionSpec()


def _stepper(c, grad_accum, groups=1):
  """(run, initial params): run(batch) takes one step from the same initial state (a copy:
  the step donates it) with one compiled program, so several batches share a compile.
  With groups > 1, batch is a list of group batches (data.size_group)."""
  mesh = sharding.make_mesh()
  module, rules = build_model(c)
  tx, lr_fn = train.make_optimizer(c, rules)
  state = train.init_state(c, module, tx, mesh)
  step = train.make_train_step(module, tx, lr_fn, mesh, grad_accum=grad_accum, groups=groups)

  def run(batch):
    put = lambda b: sharding.shard_batch(train.model_inputs(module, b, True), mesh)
    s, m = step(jax.tree.map(jnp.copy, state),
                [put(b) for b in batch] if groups > 1 else put(batch))
    return flat_params(s.params), m
  return run, flat_params(state.params)


def test_grad_accumulation_averages_micro_batch_gradients(tmp_path):
  c = tiny_config(tmp_path, steps=10)
  c.optim.weight_decay = 0.0
  c.optim.schedule.warmup_steps = 0  # lr(0) = base_lr, not the warmup's 0
  batch = next(pipelines.for_config(c).train_iterator(loader.build(c, 'train')))
  run, start = _stepper(c, grad_accum=2)
  accum, m = run(batch)
  # Micro-batch j holds rows j, j+2: the same update as averaging the two
  # gradients, i.e. as two half-lr steps from the same start (momentum starts at 0).
  c.optim.base_lr /= 2
  c.train.batch_size = 2
  run_half, start_half = _stepper(c, grad_accum=1)
  half = [run_half({k: v[j::2] for k, v in batch.items()})[0] for j in (0, 1)]
  for k in accum:
    np.testing.assert_array_equal(start_half[k], start[k], err_msg=k)  # same init
    expected = half[0][k] + half[1][k] - start[k]
    np.testing.assert_allclose(accum[k], expected, rtol=1e-4, atol=1e-5, err_msg=k)
  moved = max(np.abs(accum[k] - start[k]).max() for k in accum)
  assert moved > 1e-3  # the step really changed the parameters
  assert np.isfinite(float(m['train/loss']))
  # data.size_group's step, its two groups being those micro-batches: the same update.
  # (Groups may differ in shape; these two do not, so grad_accum can run them.)
  c.optim.base_lr *= 2
  c.train.batch_size = 4
  run_groups, _ = _stepper(c, grad_accum=1, groups=2)
  grouped, mg = run_groups([{k: v[j::2] for k, v in batch.items()} for j in (0, 1)])
  for k in accum:
    np.testing.assert_allclose(grouped[k], accum[k], rtol=1e-5, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(float(mg['train/loss']), float(m['train/loss']), rtol=1e-6)


_FSDP_SCRIPT = r'''
import sys, numpy as np, jax
sys.path.insert(0, {root!r})
from pathlib import Path
from detx import sharding, train
from detx.data import loader, pipelines
from detx.models.base import build_model
from tests.helpers import tiny_config, flat_params
out = {{}}
for mode in ('replicated', 'fsdp'):
  c = tiny_config(Path({tmp!r}), steps=10)
  c.train.batch_size = 8
  c.train.param_sharding = mode
  mesh = sharding.make_mesh()
  module, rules = build_model(c)
  tx, lr_fn = train.make_optimizer(c, rules)
  state = train.init_state(c, module, tx, mesh)
  step = train.make_train_step(module, tx, lr_fn, mesh, shardings=train.state_sharding(state))
  it = pipelines.for_config(c).train_iterator(loader.build(c, 'train'))
  losses = []
  for _ in range(2):
    state, m = step(state, sharding.shard_batch(train.model_inputs(module, next(it), True), mesh))
    losses.append(float(m['train/loss']))
  out[mode + '_losses'] = np.array(losses)
  leaves = jax.tree.leaves(state.params)
  out[mode + '_sharded'] = np.array(sum('data' in str(x.sharding.spec) for x in leaves))
  out[mode + '_opt_sharded'] = np.array(sum('data' in str(getattr(x, 'sharding', None) and x.sharding.spec)
                                            for x in jax.tree.leaves(state.opt_state)))
np.savez({out!r}, **out)
'''


def test_fsdp_matches_replicated_on_8_devices(tmp_path):
  tiny_config(tmp_path)
  out = tmp_path / 'fsdp.npz'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  r = subprocess.run([sys.executable, '-c', _FSDP_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path), out=str(out))],
                     env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  o = dict(np.load(out))
  np.testing.assert_allclose(o['replicated_losses'], o['fsdp_losses'], rtol=1e-5)
  assert o['replicated_sharded'] == 0 and o['fsdp_sharded'] > 0 and o['fsdp_opt_sharded'] > 0
