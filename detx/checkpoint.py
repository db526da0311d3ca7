"""Orbax checkpoints in WORKDIR/checkpoints/<step>/; saves are atomic, so a crash
mid-save never leaves a step directory that a resume would pick up."""
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from detx.errors import WorkdirError


class Checkpointer:

  def __init__(self, workdir, keep: int = 3):
    self.directory = Path(workdir).resolve() / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, force: bool = False):
    if self.manager.latest_step() == step:
      return
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, state, step=None):
    """Restores into the structure, shapes and shardings of `state`."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(state))

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


class BestCheckpointer:
  """Keeps WORKDIR/checkpoints_best/<step>/: the state with the best `metric` so far
  (higher is better), besides the last K in checkpoints/."""

  def __init__(self, workdir, metric: str):
    self.metric = metric
    self.directory = Path(workdir).resolve() / 'checkpoints_best'
    self.manager = None
    self.best = None
    if metric and self.directory.exists():
      self.manager = self._open()
      step = self.manager.latest_step()
      if step is not None:
        self.best = (self.manager.metrics(step) or {}).get(metric)

  def _open(self):
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda m: m[self.metric], best_mode='max'))

  def offer(self, step: int, state, results: dict) -> bool:
    value = results.get(self.metric) if self.metric else None
    if value is None or (self.best is not None and value <= self.best):
      return False
    self.manager = self.manager or self._open()
    self.manager.save(step, args=ocp.args.StandardSave(state),
                      metrics={self.metric: float(value)}, force=True)
    self.best = value
    return True

  def close(self):
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()


def is_checkpoint(path) -> bool:
  """Whether `path` is a detx workdir, its checkpoints/ dir or one step dir of it."""
  path = Path(path).expanduser()
  return path.is_dir() and ((path / 'checkpoints').is_dir() or path.name == 'checkpoints'
                            or (path / 'default').is_dir())


def latest_step_dir(path) -> Path | None:
  """The step directory a workdir, its checkpoints/ dir or a step dir designates (the
  latest saved step of the first two); None when there is none. Reads the directory
  names only (orbax renames a step's temporary directory to <step> when the save
  commits), so it runs before jax is initialised."""
  path = Path(path).expanduser().resolve()
  if (path / 'checkpoints').is_dir():
    path = path / 'checkpoints'
  if not path.is_dir():
    return None
  if path.name.isdigit() and (path / 'default').is_dir():
    return path
  steps = [int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir()]
  return path / str(max(steps)) if steps else None


def find(path) -> Path:
  """latest_step_dir(path), or a WorkdirError saying there is no checkpoint there."""
  step_dir = latest_step_dir(path)
  if step_dir is None:
    where = 'does not exist' if not Path(path).expanduser().exists() else 'holds none'
    raise WorkdirError(f'no checkpoint in {path} (it {where}): train first (--mode=train), '
                       'or give a workdir, its checkpoints/ or one step directory')
  return step_dir


def _shapes(tree) -> dict:
  return {jax.tree_util.keystr(p, simple=True, separator='/'): tuple(leaf.shape)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_shapes(step_dir, target) -> None:
  """Raises WorkdirError naming the arrays when the checkpoint in `step_dir` does not
  hold `target`'s tree and shapes (another model, class count or optimizer): read
  from the checkpoint's metadata, before any restore."""
  step_dir = Path(step_dir)
  with ocp.StandardCheckpointer() as reader:
    meta = reader.metadata(step_dir / 'default')
  saved, wanted = _shapes(getattr(meta, 'item_metadata', meta)), _shapes(target)
  problems = []
  for k in sorted(set(saved) | set(wanted), key=lambda k: (not k.startswith('params'), k)):
    if k not in saved:
      problems.append(f'{k} {wanted[k]} is not in it')
    elif k not in wanted:
      problems.append(f'{k} {saved[k]} is not in this model')
    elif saved[k] != wanted[k]:
      problems.append(f'{k} is {saved[k]} there, {wanted[k]} here')
  if problems:
    more = f'; and {len(problems) - 3} more' if len(problems) > 3 else ''
    raise WorkdirError(f'checkpoint {step_dir} holds another model or optimizer '
                       f'({len(problems)} arrays differ: {"; ".join(problems[:3])}{more})')


def restore_variables(path, target=None):
  """Restores a checkpoint given as a workdir, a checkpoints/ dir or a step dir (the
  latest step of the first two). target=None: the saved tree as it is (numpy arrays);
  else its structure and shapes, checked first (check_shapes)."""
  step_dir = find(path)
  if target is not None:
    check_shapes(step_dir, target)
  mgr = ocp.CheckpointManager(step_dir.parent)
  try:
    return mgr.restore(int(step_dir.name), args=ocp.args.StandardRestore(target))
  finally:
    mgr.close()


def saved_steps(workdir) -> dict[int, Path]:
  """{step: step directory} of WORKDIR's checkpoints/ and checkpoints_best/ (the
  former where a step is in both)."""
  found = {}
  for name in ('checkpoints_best', 'checkpoints'):
    d = Path(workdir).expanduser() / name
    if d.is_dir():
      found.update({int(p.name): p for p in d.iterdir()
                    if p.name.isdigit() and (p / 'default').is_dir()})
  return dict(sorted(found.items()))


def best_step(workdir, metric: str) -> int | None:
  """The saved step with the highest `metric` (train.best_metric) that metrics.jsonl
  records for it (a step's last evaluation counts); None when no saved step has one."""
  from detx.metrics import read_metrics
  recorded = {int(row['step']): row[metric] for row in read_metrics(workdir) if metric in row}
  scored = [(recorded[s], s) for s in saved_steps(workdir) if s in recorded]
  return max(scored)[1] if scored else None


def select(workdir, step: str = '', metric: str = 'bbox/AP') -> Path:
  """The step directory `--step` names: '' or 'latest' the latest checkpoint (find),
  N that step, 'best' best_step(workdir, metric). WorkdirError listing the saved steps
  when there is no such checkpoint."""
  step = str(step).strip()
  if step in ('', 'latest'):
    return find(workdir)
  saved = saved_steps(workdir)
  present = ', '.join(map(str, saved)) or 'none'
  if step == 'best':
    best = best_step(workdir, metric) if metric else None
    if best is None:
      raise WorkdirError(f'--step=best: no saved step of {workdir} has {metric or "a metric"} '
                         f'in metrics.jsonl (evaluate one with --step=N; steps present: '
                         f'{present})')
    return saved[best]
  if not step.isdigit():
    raise WorkdirError(f'--step={step}: give a step number, best or latest')
  if int(step) not in saved:
    raise WorkdirError(f'no checkpoint of step {step} in {workdir}; steps present: {present}')
  return saved[int(step)]
