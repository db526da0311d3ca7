"""Orbax checkpoints in WORKDIR/checkpoints/<step>/; saves are atomic, so a crash
mid-save never leaves a step directory that a resume would pick up."""
from pathlib import Path

import orbax.checkpoint as ocp


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


def restore_variables(path, target=None):
  """Restores a checkpoint given as a workdir, a checkpoints/ dir or a step dir (the
  latest step of the first two). target=None: the saved tree as it is (numpy arrays)."""
  path = Path(path).expanduser().resolve()
  if (path / 'checkpoints').is_dir():
    path = path / 'checkpoints'
  args = ocp.args.StandardRestore(target)
  if path.name == 'checkpoints' or not any(p.name == 'default' for p in path.iterdir()):
    mgr = ocp.CheckpointManager(path)
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {path}')
    return mgr.restore(step, args=args)
  mgr = ocp.CheckpointManager(path.parent)
  return mgr.restore(int(path.name), args=args)
