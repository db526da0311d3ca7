"""Train state, the jitted train step, the loop, checkpoint and resume (evaluation:
detx.evaluation)."""
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from detx import checkpoint, evaluation, metrics, sharding
from detx.errors import Diverged
from detx.data import loader, pipelines
from detx.models.base import build_model, model_inputs
from detx.optim import make_optimizer



@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  bad_steps: jax.Array      # consecutive non-finite steps (skipped)
  skipped_steps: jax.Array  # all skipped steps

  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def as_dict(self):
    return flax.serialization.to_state_dict(self)


def dummy_batch(config) -> dict:
  """One all-padding example of the eval pipeline's shape, batched: for init."""
  elem = pipelines.for_config(config).padding_example()
  return {k: np.asarray(v)[None] for k, v in elem.items()}


def init_state(config, module, tx, mesh) -> TrainState:
  rng = jax.random.key(config.seed)
  batch = model_inputs(module, dummy_batch(config), train=False)

  def init(rng):
    variables = module.init(rng, batch, train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), bad_steps=jnp.zeros((), jnp.int32),
                      skipped_steps=jnp.zeros((), jnp.int32))

  shardings = sharding.state_shardings(jax.eval_shape(init, rng), mesh,
                                      config.train.param_sharding)
  return jax.jit(init, out_shardings=shardings)(rng)


def load_pretrained(config, state: TrainState, rules) -> TrainState:
  """model.pretrained (Paddle weights or a detx run) into a fresh state's variables."""
  path = config.model.get('pretrained', '')
  if not path:
    return state
  from detx.weights import pretrained
  variables, summary = pretrained.load(jax.device_get(state.variables()), path, rules.paddle,
                                       config)
  print(summary, flush=True)
  shard = state_sharding(state)
  return state.replace(params=jax.device_put(variables['params'], shard.params),
                       batch_stats=jax.device_put(variables['batch_stats'], shard.batch_stats))


def state_sharding(state):
  return jax.tree.map(lambda x: x.sharding, state)


def make_train_step(module, tx, lr_fn, mesh, seed: int = 0, inject_nan_steps=(),
                    shardings=None, grad_accum: int = 1, groups: int = 1):
  """The jitted step: step(state, batch) -> (state, metrics). Models that sample
  (R-CNN targets) get the PRNG stream 'sample', a pure function of (seed, step), so
  resumed runs draw the same samples. A non-finite loss or gradient leaves the state
  unchanged and is counted. `inject_nan_steps` (config train.inject_nan_steps) poisons
  the loss at those 1-based steps: a test hook for the fault path. `shardings` is the
  state's (state_sharding(state)); `grad_accum` > 1 averages the gradients of that many
  micro-batches (BatchNorm statistics are then per micro-batch).

  `groups` > 1 (data.size_group): step(state, [batch per group]) where each group's
  batch may have its own shape; the groups run one after the other as micro-steps (one
  compiled gradient program per shape, gradients summed on device), then one update
  with their mean, as grad_accum does."""
  poisoned = jnp.asarray(tuple(inject_nan_steps) or (-1,), jnp.int32)

  def grads_of(params, batch_stats, batch, key):
    def loss_fn(params):
      losses, updates = module.apply(
          {'params': params, 'batch_stats': batch_stats}, batch, train=True,
          mutable=['batch_stats'], rngs={'sample': key})
      return losses['loss'], (losses, updates['batch_stats'])
    (_, (losses, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return losses, batch_stats, grads

  def step_key(step):
    return jax.random.fold_in(jax.random.key(seed), step)

  def step_fn(state: TrainState, batch):
    key = step_key(state.step)
    if grad_accum == 1:
      losses, batch_stats, grads = grads_of(state.params, state.batch_stats, batch, key)
    else:
      # Row i of micro-batch j is row i * grad_accum + j: every micro-batch keeps
      # the batch's split over devices.
      micro = jax.tree.map(
          lambda x: jnp.swapaxes(x.reshape((-1, grad_accum) + x.shape[1:]), 0, 1), batch)

      def body(carry, xs):
        batch_stats, grads = carry
        j, mb = xs
        losses, batch_stats, g = grads_of(state.params, batch_stats, mb, jax.random.fold_in(key, j))
        return (batch_stats, jax.tree.map(jnp.add, grads, g)), losses

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (batch_stats, grads), losses = jax.lax.scan(
          body, (state.batch_stats, zeros), (jnp.arange(grad_accum), micro))
      grads = jax.tree.map(lambda g: g / grad_accum, grads)
      losses = jax.tree.map(jnp.mean, losses)
    return apply_fn(state, losses, batch_stats, grads)

  def apply_fn(state: TrainState, losses, batch_stats, grads):
    poison = jnp.where(jnp.any(poisoned == state.step + 1), jnp.nan, 0.0)
    loss = losses['loss'] + poison
    lr = lr_fn(state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        bad_steps=jnp.where(finite, 0, state.bad_steps + 1),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    out = {f'train/{k}': v for k, v in losses.items()}
    out.update({'train/loss': loss, 'train/lr': lr, 'train/grad_norm': grad_norm,
                'train/skipped_steps': new_state.skipped_steps,
                'train/bad_steps': new_state.bad_steps})
    return new_state, out

  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  shardings = repl if shardings is None else shardings
  if groups == 1:
    return jax.jit(step_fn, in_shardings=(shardings, data), out_shardings=(shardings, repl),
                   donate_argnums=0)
  params_s = repl if shardings is repl else shardings.params
  stats_s = repl if shardings is repl else shardings.batch_stats

  def group_fn(params, batch_stats, grads, batch, step, j):
    losses, batch_stats, g = grads_of(params, batch_stats, batch,
                                      jax.random.fold_in(step_key(step), j))
    return losses, batch_stats, jax.tree.map(jnp.add, grads, g)

  def finish_fn(state: TrainState, group_losses, batch_stats, grads):
    losses = jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *group_losses)
    return apply_fn(state, losses, batch_stats, jax.tree.map(lambda g: g / groups, grads))

  group_step = jax.jit(group_fn, in_shardings=(params_s, stats_s, params_s, data, repl, repl),
                       out_shardings=(repl, stats_s, params_s), donate_argnums=2)
  finish = jax.jit(finish_fn, out_shardings=(shardings, repl), donate_argnums=0)
  zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p), out_shardings=params_s)

  def grouped_step(state: TrainState, batches):
    if len(batches) != groups:
      raise ValueError(f'{len(batches)} group batches for a step of {groups}')
    grads, batch_stats, group_losses = zeros(state.params), state.batch_stats, []
    for j, batch in enumerate(batches):
      losses, batch_stats, grads = group_step(state.params, batch_stats, grads, batch,
                                              state.step, j)
      group_losses.append(losses)
    return finish(state, group_losses, batch_stats, grads)
  return grouped_step


class _StopFlag:
  """SIGTERM/SIGINT ask the loop to checkpoint and exit at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. some notebook runners)
        pass
    return self

  def _handle(self, signum, frame):
    print(f'detx: signal {signum} received; saving a checkpoint at the next step', flush=True)
    self.requested = True

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def write_config(config, workdir):
  """WORKDIR/config.json, replaced atomically (a crash never leaves half a record)."""
  Path(workdir).mkdir(parents=True, exist_ok=True)
  tmp = Path(workdir) / f'.config.json.tmp{os.getpid()}'
  tmp.write_text(config.to_json_best_effort(indent=2))
  os.replace(tmp, Path(workdir) / 'config.json')


def count_params(params) -> int:
  return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(params)))


def banner(config, workdir, mesh, state, train_set, eval_set, start: int, end: int,
           resumed_from=None, file_changes=None, workdir_changes=None) -> list[str]:
  """The lines printed before the first step: devices and mesh, parameter count,
  dataset sizes, the keys that differ from the config file (file_changes:
  {key: (file value, value)}) and from the workdir's config.json, workdir and
  resume point."""
  from detx import workdir as wd
  devices = jax.devices()
  n_dev = len(devices)
  kinds = sorted({f'{d.platform} ({d.device_kind})' for d in devices})
  mesh_shape = ' x '.join(f'{k}={v}' for k, v in mesh.shape.items())
  batch = config.train.batch_size
  n_proc = jax.process_count()
  lines = [f'devices: {n_dev} x {", ".join(kinds)}, {n_proc} process{"es" * (n_proc > 1)}; '
           f'mesh {mesh_shape}; batch {batch} ({batch / n_dev:g} per device)',
           f'model: {config.model.name}, {count_params(state.params):,} parameters '
           f'({config.model.backbone.name} backbone, {config.model.num_classes} classes)',
           f'data: {config.data.train_split} {train_set.num_images} images, '
           f'{train_set.num_classes} categories ({train_set.dir})'
           + (f'; {eval_set.split} {eval_set.num_images} images' if eval_set else '')]
  if file_changes is not None:
    lines.append('config: as its file' if not file_changes else
                 'config: differs from its file in ' + ', '.join(
                     f'{k}={wd.short(new)}' for k, (_, new) in file_changes.items()))
  if workdir_changes:
    lines.append(f'config: differs from {Path(workdir) / "config.json"} in '
                 + wd.describe(workdir_changes, limit=20))
  stop = f', stopping at {end}' if end < config.train.steps else ''
  lines.append(f'workdir: {Path(workdir).resolve()}; '
               f'{"resuming at" if resumed_from else "starting at"} step {start} of '
               f'{config.train.steps}{stop}')
  if resumed_from:
    lines.append(f'resumed from {resumed_from}')
  return ['detx: ' + line for line in lines]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       do_eval: bool = True, file_changes: dict | None = None) -> dict:
  """Trains to train.steps (or train.stop_at), resuming from WORKDIR; returns the last eval.

  Everything that can refuse the run is checked before anything is written: the
  workdir's config.json (detx.workdir.check_config), the datasets' categories against
  model.num_classes, the checkpoint's arrays against the model (detx.checkpoint.
  check_shapes) and model.pretrained. file_changes ({key: (file value, value)}, from
  the command line) is shown in the start-up banner."""
  from detx import workdir as wd
  metrics.install_compile_counter()
  wd.check_path(workdir)
  workdir_changes = wd.check_config(config, workdir)
  mesh = sharding.make_mesh()
  module, rules = build_model(config)
  pipeline = pipelines.for_config(config)  # refuses a bad data.size_group
  groups = pipeline.groups_per_step  # data.size_group: a train size per group of images
  tx, lr_fn = make_optimizer(config, rules)
  dataset = loader.build(config, config.data.train_split)
  note = loader.check_num_classes(config, dataset)
  eval_set = None
  if do_eval:
    eval_set = loader.build(config, config.eval.split)
    loader.check_num_classes(config, eval_set, evaluating=True)
    evaluation.loop.eval_sizes(config)  # a bad eval.sizes is refused now, not after training
  state = init_state(config, module, tx, mesh)
  resume_dir = checkpoint.latest_step_dir(workdir) if Path(workdir).is_dir() else None
  if resume_dir is not None:
    checkpoint.check_shapes(resume_dir, state.as_dict())
  else:
    state = load_pretrained(config, state, rules)
  # The checks passed: from here on the workdir is written.
  write_config(config, workdir)
  (Path(workdir) / 'categories.json').write_text(json.dumps(
      [{'id': int(i), 'name': n} for i, n in zip(dataset.category_ids, dataset.category_names)]))
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  best = checkpoint.BestCheckpointer(workdir, config.train.best_metric)
  if resume_dir is not None:
    state = flax.serialization.from_state_dict(state, ckpt.restore(state.as_dict()))
  start = int(jax.device_get(state.step))
  end = config.train.steps if not config.train.stop_at else min(config.train.stop_at, config.train.steps)
  for line in banner(config, workdir, mesh, state, dataset, eval_set, start, end,
                     resumed_from=resume_dir and f'{ckpt.directory}/{ckpt.latest_step()}',
                     file_changes=file_changes, workdir_changes=workdir_changes):
    print(line, flush=True)
  if note:
    print(f'detx: note: {note}', flush=True)
  writer = metrics.MetricWriter(workdir)
  train_step = make_train_step(module, tx, lr_fn, mesh, config.seed,
                               config.train.inject_nan_steps, state_sharding(state),
                               config.train.grad_accum, groups)
  eval_step = evaluation.make_eval_step(module, mesh) if do_eval else None
  result, step, batch_iter = {}, start, None
  # Throughput and ETA are measured from the end of this run's first step: that step
  # compiles (and starts the loader), which would count as minutes of training.
  t_log = None
  try:  # whatever is raised, the loader's workers stop and pending checkpoint saves finish
    with _StopFlag() as stop:
      batch_iter = pipeline.train_iterator(dataset, start_step=start)
      t_start = time.time()
      for step in range(start + 1, end + 1):
        parts = [sharding.shard_batch(model_inputs(module, next(batch_iter), True), mesh)
                 for _ in range(groups)]
        state, m = train_step(state, parts if groups > 1 else parts[0])
        if t_log is None:
          jax.block_until_ready(m)
          t_log, timed_from, first_step_s = time.time(), step, time.time() - t_start
        last = step == end or stop.requested
        if step % config.train.log_every == 0 or last:
          m = jax.device_get(m)
          m.update(metrics.compile_counts())
          if step > timed_from:
            ips = (step - timed_from) * config.train.batch_size / max(time.time() - t_log, 1e-9)
            m['train/img_per_s'] = ips
            eta = (end - step) * config.train.batch_size / max(ips, 1e-9)
            timing = f'{ips:.1f} img/s eta {eta / 60:.1f} min'
          else:
            m['train/first_step_s'] = first_step_s
            timing = f'first step {first_step_s:.1f} s (compilation; eta from the next log)'
          writer.write(step, m)
          print(f'step {step}/{end} loss {m["train/loss"]:.4f} lr {m["train/lr"]:.2e} {timing}',
                flush=True)
          if int(m['train/bad_steps']) >= config.train.max_bad_steps:
            raise Diverged(
                f'{int(m["train/bad_steps"])} consecutive non-finite steps at step {step}; '
                f'the last good checkpoint is in {ckpt.directory} (train.max_bad_steps='
                f'{config.train.max_bad_steps})')
          t_log, timed_from = time.time(), step
        if step % config.train.checkpoint_every == 0 or last:
          ckpt.save(step, state.as_dict())
        final = step == config.train.steps
        if do_eval and not stop.requested and (
            final or (config.eval.every and step % config.eval.every == 0)):
          result = evaluation.evaluate(config, module, state.variables(), mesh, eval_step,
                                       dataset=eval_set, writer=writer, step=step)
          print('detx: eval ' + json.dumps(evaluation.headline(result)), flush=True)
          best.offer(step, state.as_dict(), result)
        if stop.requested:  # the signal may land after this step's save decision
          ckpt.save(step, state.as_dict())
          break
    if do_eval and start == config.train.steps and not result:  # resumed a finished run
      result = evaluation.evaluate(config, module, state.variables(), mesh, eval_step,
                                   dataset=eval_set, writer=writer, step=start)
  finally:
    if batch_iter is not None:
      batch_iter.close()
    ckpt.close()
    best.close()
    writer.close()
  return result
