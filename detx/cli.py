"""Command-line parsing shared by detx.main and detx.predict.

``parse(argv)`` parses absl flags (the ml_collections config file flag ``--config``
and its ``--config.a.b=value`` overrides included) into ``flags.FLAGS`` as
``app.run`` would, but every mistake is one :class:`detx.errors.UserError` naming it:
a missing config file (with the close configs/ names; `--config` takes a path or a
bare name such as `quickstart`, detx.config.resolve), an unknown config key (with
the closest key, as ml_collections suggests), a value of the wrong type (with the
type the key holds), an unknown or missing flag. It can run again in the same
process (the tests call the command lines in-process): the previous parse's values
and override flags are dropped first.
"""
import difflib
import re
import sys

from absl import flags
import ml_collections

from detx import config as cfg
from detx.errors import ConfigError, UserError

_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=\s]+)')
_CONFIG = re.compile(r'^--?config(?:=(.*))?$')


def config_spec(argv) -> str | None:
  """The value of --config in argv (None when absent)."""
  for i, arg in enumerate(argv):
    m = _CONFIG.match(arg)
    if m:
      if m.group(1) is not None:
        return m.group(1)
      return argv[i + 1] if i + 1 < len(argv) else ''
  return None


def resolve_spec(spec: str) -> str:
  """A --config value with its file resolved (detx.config.resolve: a path, or a bare
  name such as `quickstart` from the configs that ship with detx), `:arg` kept;
  PathError listing the close names when there is no such config."""
  path, sep, arg = spec.partition(':')
  return f'{cfg.resolve(path)}{sep}{arg}'


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config a --config value names (`path.py`, `name`, either with `:arg`), as
  the file defines it; PathError (with the close configs/ names) when there is none."""
  path, _, arg = resolve_spec(spec).partition(':')
  return cfg.load(path, arg or None)


def _with_config(argv, spec: str) -> list[str]:
  """argv (argv[0] the program) with its --config value replaced by spec."""
  out, i = [argv[0]], 1
  while i < len(argv):
    m = _CONFIG.match(argv[i])
    out.append(f'--config={spec}' if m else argv[i])
    i += 2 if m and m.group(1) is None else 1
  return out


def check_override_keys(config, argv) -> None:
  """ConfigError for the first --config.KEY in argv that is not a key of config,
  naming the closest key where there is one."""
  for arg in argv:
    m = _OVERRIDE.match(arg)
    if not m:
      continue
    key = m.group(1)
    node, path = config, []
    for part in key.split('.'):
      name = part.split('[')[0]
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f'unknown config key {key}: {".".join(path)} is '
                          f'{_a(type(node).__name__)}, it has no keys')
      if name not in node:
        close = difflib.get_close_matches(name, [str(k) for k in node.keys()], n=1)
        hint = f'; did you mean {".".join(path + [close[0]])}?' if close else ''
        raise ConfigError(f'unknown config key {key}{hint}')
      node = node[name]
      path.append(name)


def _value(config, key: str):
  node = config
  for part in key.split('.'):
    node = node[part.split('[')[0]]
  return node


def _a(kind: str) -> str:
  return ('an ' if kind[:1] in 'aeiou' else 'a ') + kind


def _value_type(config, key: str) -> str:
  return _a(type(_value(config, key)).__name__)


def _fits(template, value) -> bool:
  """Whether an override's value has the shape of the file's value: sequences stay
  sequences of the same kind of element (numbers, strings, bools), scalars keep
  their kind (ml_collections checks scalars, not what a tuple holds)."""
  if isinstance(template, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      return False
    if not template:
      return True
    pairs = zip(template, value) if len(template) == len(value) else (
        (template[0], v) for v in value)
    return all(_fits(t, v) for t, v in pairs)
  if isinstance(template, bool):
    return isinstance(value, bool)
  if isinstance(template, (int, float)):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(template, str):
    return isinstance(value, str)
  return True


def check_override_types(file_config, config, argv) -> None:
  """ConfigError naming the first override whose value does not fit the file's."""
  for arg in argv:
    m = _OVERRIDE.match(arg)
    if not m or '[' in m.group(1):
      continue
    key = m.group(1)
    template, value = _value(file_config, key), _value(config, key)
    if template is not None and not _fits(template, value):
      given = arg.split('=', 1)[1] if '=' in arg else value
      raise ConfigError(f'bad value for config key {key}: {given} is not like its '
                        f'value in the config file, {template!r}')


def _flag_message(error: flags.Error, config) -> str:
  text = ' '.join(str(error).split())
  m = re.match(r'flag --(\S+?)=None: Flag --\S+ must have a value other than None', text)
  if m:
    return f'--{m.group(1)} is required'
  m = re.match(r'flag --config\.(\S+?)=(.*?): (.*)$', text)
  if m and config is not None:
    key, value, why = m.groups()
    try:
      kind = _value_type(config, key)
    except (KeyError, AttributeError):
      kind = None
    holds = f' (config key {key} holds {kind})' if kind else ''
    return f'bad value for config key {key}: {value}: {why}{holds}'
  return text


def parse(argv, flag_values: flags.FlagValues = flags.FLAGS,
          require_config: bool = True) -> list[str]:
  """Parses argv (argv[0] is the program) into flag_values; returns the remaining
  arguments. Raises UserError (see the module docstring)."""
  argv = list(argv)
  spec = config_spec(argv[1:])
  config = None
  wants_help = any(a.lstrip('-') in ('help', 'h', 'helpshort', 'helpfull', '?') for a in argv[1:])
  if spec is None:
    if require_config and not wants_help:
      raise UserError('--config=configs/<name>.py is required')
  else:
    config = load_config_file(spec)
    check_override_keys(config, argv[1:])
    argv = _with_config(argv, resolve_spec(spec))  # config_flags reads a file path
  for name in list(flag_values):  # a previous parse's override flags
    if name.startswith('config.'):
      delattr(flag_values, name)
  flag_values.unparse_flags()
  saved, sys.argv = sys.argv, argv  # config_flags finds the overrides in sys.argv
  try:
    rest = flag_values(argv)
    if config is not None:
      check_override_types(config, flag_values['config'].value, argv[1:])
    return rest
  except flags.Error as e:
    raise UserError(_flag_message(e, config)) from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if isinstance(e, UserError):
      raise
    raise ConfigError(f'bad config override: {" ".join(str(e).split())}') from None
  finally:
    sys.argv = saved


def file_changes(config, spec: str) -> dict:
  """{key: (the file's value, config's value)} for the keys where the parsed config
  differs from its file (the command line's overrides)."""
  from detx import workdir
  base = load_config_file(spec)
  return workdir.diff(workdir.as_json(base), workdir.as_json(config))


def run_command(argv, define, body, require_config: bool = True) -> int:
  """A detx tool's command line (argv[0] is the program): its own flags (--config,
  --debug and what `define(flag_values)` adds), parsed as `parse` does, then
  `body(flag_values, remaining_args)`. 0, or 2 after a user mistake's one line."""
  from ml_collections import config_flags
  from detx import errors

  def main():
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', None, 'A configs/*.py file or a zoo row name.',
                                    flag_values=fv, lock_config=False)
    flags.DEFINE_bool('debug', False, 'Show the traceback of a user mistake.', flag_values=fv)
    define(fv)
    body(fv, parse(argv, flag_values=fv, require_config=require_config))

  return errors.guard(main, argv)
