"""User mistakes: one line on stderr and exit code 2, not a traceback.

A mistake the user can fix (a config key, a value, a path, a workdir that holds
another config's run, a dataset that does not fit the model) raises a
:class:`UserError` (or a subclass that is also the builtin error it used to be:
:class:`ConfigError` is a ValueError, :class:`PathError` a FileNotFoundError,
:class:`Diverged` a FloatingPointError). The command lines (``detx.main``,
``detx.predict``) run through :func:`guard`, the one place that turns these, and the
data errors detx already names (``detx.data.DataError``, weights that do not fit),
into ``detx: <message>`` on stderr and exit code 2. ``--debug`` or ``DETX_DEBUG=1``
shows the traceback instead.
"""
import os
import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
  """A mistake the user can fix; the message says what and names the key, file or path."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work (names the config key)."""


class PathError(UserError, FileNotFoundError):
  """A path that does not exist or is not what it should be (names the path)."""


class WorkdirError(UserError):
  """A workdir that holds another config's run, or no checkpoint where one is needed."""


class Diverged(UserError, FloatingPointError):
  """train.max_bad_steps consecutive non-finite steps stopped the run."""


def user_errors() -> tuple[type, ...]:
  """The exception types reported as one line: UserError and the named data and
  weight errors (imported lazily: they live in packages that import jax)."""
  types = [UserError]
  for module, name in (('detx.data.bad_data', 'DataError'),
                       ('detx.weights.paddle', 'WeightLoadError')):
    mod = sys.modules.get(module)
    if mod is not None:
      types.append(getattr(mod, name))
  return tuple(types)


def debug_requested(argv: Sequence[str] = ()) -> bool:
  """--debug on the command line, or DETX_DEBUG set to anything but '' / '0'."""
  flag = any(a in ('--debug', '-debug', '--debug=true', '--debug=1') for a in argv)
  return flag or os.environ.get('DETX_DEBUG', '') not in ('', '0')


def one_line(error: BaseException) -> str:
  """The error's message on one line (newlines and runs of spaces collapsed)."""
  text = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1:
    text = str(error.args[0])
  return ' '.join(text.split()) or type(error).__name__


def report(error: BaseException, file=None) -> None:
  print(f'detx: {one_line(error)}', file=file or sys.stderr, flush=True)


def guard(fn: Callable[[], object], argv: Sequence[str] = ()) -> int:
  """Runs fn(); a user error prints `detx: <message>` on stderr and returns 2
  (re-raised with its traceback under --debug / DETX_DEBUG=1). Returns 0 otherwise."""
  try:
    fn()
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, user_errors()) or debug_requested(argv):
      raise
    report(e)
    return EXIT_USER_ERROR
  return 0
