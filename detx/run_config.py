"""A run's config.json as a config file, so predict and export need no overrides again.

  --config=<this file>:WORKDIR/config.json

``get_config(path)`` is the config a run was trained with (training writes it to
WORKDIR/config.json with every command-line override applied), JSON lists made tuples
again as the config files write them. ``with_run_config(argv, directory)`` rewrites a
command line (detx.predict, detx.export) so that its ``--config`` is that file when the
directory holds one: ``--config.a.b=value`` overrides given now still apply on top of it.
"""
import json
import re
from pathlib import Path

import ml_collections

_CONFIG_ARG = re.compile(r'^--?config(=|$)')


def as_tuples(value):
  """JSON's lists as the tuples the config files write."""
  if isinstance(value, dict):
    return {k: as_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(as_tuples(v) for v in value)
  return value


def get_config(path: str) -> ml_collections.ConfigDict:
  """The config saved in `path` (a workdir's config.json)."""
  return ml_collections.ConfigDict(as_tuples(json.loads(Path(path).read_text())))


def flag_value(argv, name: str):
  """The value of --NAME=V or --NAME V in argv (None when absent)."""
  for i, arg in enumerate(argv):
    if arg in (f'--{name}', f'-{name}'):
      return argv[i + 1] if i + 1 < len(argv) else None
    for prefix in (f'--{name}=', f'-{name}='):
      if arg.startswith(prefix):
        return arg[len(prefix):]
  return None


def with_run_config(argv, directory) -> tuple[list[str], str | None, Path | None]:
  """(argv, the --config it had, the config.json it now names): argv[1:]'s --config
  replaced by `directory`'s config.json when there is one (argv unchanged otherwise)."""
  given = flag_value(argv[1:], 'config')
  path = Path(directory).expanduser() / 'config.json' if directory else None
  if path is None or not path.is_file():
    return list(argv), given, None
  out, skip = [argv[0]], False
  for arg in argv[1:]:
    if skip:
      skip = False
    elif _CONFIG_ARG.match(arg):
      skip = arg.lstrip('-') == 'config'  # '--config VALUE': drop the value too
    else:
      out.append(arg)
  spec = f'--config={Path(__file__).resolve()}:{path.resolve()}'  # before its overrides
  return [out[0], spec, *out[1:]], given, path
