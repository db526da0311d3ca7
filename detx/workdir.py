"""A workdir's record of its run (config.json) against the config about to use it.

Training resumes in a workdir only with the model it holds: ``check_config`` compares
the workdir's config.json with the config before anything is built or written and
refuses (:class:`detx.errors.WorkdirError`, naming the keys) when a key that defines
the trained state differs: any ``model.*`` key but ``model.pretrained`` (a resumed run
ignores it), and the optimizer keys whose zero / non-zero value adds or removes
optimizer state (``optim.clip_norm``, ``optim.momentum``), and ``optim.name`` (RMSProp's
state). Every other key may differ
(run control: ``train.steps``, ``train.stop_at``, the cadences, ``data.dir``,
``data.num_workers``, ``compile_cache``, ...; and the training recipe from here on) and
is returned as text to print. Evaluation and predict only print the differences: the
checkpoint's own array shapes decide (detx.checkpoint.check_shapes).
"""
import json
from pathlib import Path

from detx.errors import WorkdirError

# model.* keys that never shape the trained state.
_MODEL_FREE = ('model.pretrained',)
# Keys outside model.* whose zero / non-zero value changes the optimizer state's tree.
_STATE_SWITCHES = ('optim.clip_norm', 'optim.momentum')


def flatten(tree, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1} (lists stay leaves)."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict) and v:
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def as_json(config) -> dict:
  """The config as config.json holds it (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def diff(old: dict, new: dict) -> dict:
  """{key: (old value, new value)} over the flattened keys of both (missing: None)."""
  a, b = flatten(old), flatten(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def defines_state(key: str, old, new) -> bool:
  """Whether a change of `key` from old to new changes what a checkpoint holds."""
  if key.startswith('model.') and key not in _MODEL_FREE:
    return True
  if key in _STATE_SWITCHES:
    return bool(old) != bool(new)
  if key == 'optim.name':  # RMSProp keeps a mean square per parameter; absent = momentum
    return (old or 'momentum') != (new or 'momentum')
  return False


def describe(changes: dict, limit: int = 8) -> str:
  items = [f'{k} {short(a)} -> {short(b)}' for k, (a, b) in changes.items()]
  more = f'; and {len(items) - limit} more' if len(items) > limit else ''
  return '; '.join(items[:limit]) + more


def short(value, width: int = 40) -> str:
  text = json.dumps(value) if value is not None else '(absent)'
  return text if len(text) <= width else text[:width - 3] + '...'


def read_config(workdir) -> dict | None:
  """The workdir's config.json (None when there is none)."""
  path = Path(workdir).expanduser() / 'config.json'
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(f'cannot read {path}: {e}') from None


def check_config(config, workdir, refuse: bool = True) -> dict:
  """The keys that differ from WORKDIR/config.json ({key: (old, new)}; {} without one).
  refuse=True (training): raises WorkdirError naming the keys when one of them
  defines the trained state (`defines_state`), before anything is written."""
  old = read_config(workdir)
  if old is None:
    return {}
  changes = diff(old, as_json(config))
  blocking = {k: v for k, v in changes.items() if defines_state(k, *v)}
  if refuse and blocking:
    raise WorkdirError(
        f'workdir {workdir} holds a run of another model: {describe(blocking)} '
        f'(its config.json); resume with its config, or use another --workdir')
  return changes


def check_path(workdir) -> Path:
  """The workdir as a Path; a path that exists and is not a directory is refused."""
  path = Path(workdir).expanduser()
  if path.exists() and not path.is_dir():
    raise WorkdirError(f'--workdir {workdir} is a file, not a directory')
  return path
