r"""detx entry point.

  python -m detx.main --config=configs/quickstart.py --workdir=/tmp/qs [--mode=train_and_eval]
  python -m detx.main --config=configs/yolov3_darknet.py --workdir=DIR \
      --config.data.dir=/data/coco --config.optim.base_lr=0.0005

Training resumes from the latest checkpoint in --workdir.

A mistake (an unknown config key or flag, a value of the wrong type, a missing
config file, a workdir that holds another model's run, a missing checkpoint, a
dataset that does not fit model.num_classes, the named data errors) ends with one
line `detx: <message>` on stderr and exit code 2 (detx.errors); --debug or
DETX_DEBUG=1 shows the traceback. `run(argv)` is the same command line in-process.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from detx import cli, errors

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, metrics, logs).')
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', ['train', 'eval', 'train_and_eval', 'predict'],
                          'What to run.')
_INPUT = flags.DEFINE_string('input', None, 'predict mode: an image or a directory of images.')
_STEP = flags.DEFINE_string('step', '', 'eval mode: the checkpoint to evaluate: a step N, '
                            '"best" (the saved step with the highest train.best_metric in '
                            'metrics.jsonl) or "latest" (the default).')
flags.DEFINE_bool('debug', False, 'Show the traceback of a user mistake (or DETX_DEBUG=1).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = os.path.expanduser(_WORKDIR.value)
  from detx import workdir as wd
  wd.check_path(workdir)
  if _STEP.value and _MODE.value != 'eval':
    raise errors.UserError(f'--step is for --mode=eval, not --mode={_MODE.value}')
  step_dir = None
  if _MODE.value in ('eval', 'predict'):
    from detx import checkpoint
    # before the model: a missing checkpoint or step is one line
    step_dir = checkpoint.select(workdir, _STEP.value, config.train.best_metric)
  if _MODE.value == 'predict' and not _INPUT.value:
    raise errors.UserError('--mode=predict needs --input=IMAGE_OR_DIR')
  logging.set_verbosity(logging.WARNING)  # orbax/tfds info lines; detx prints its own progress
  import jax  # after flag parsing, so XLA_FLAGS set by the caller apply
  from detx import distributed
  distributed.initialize()
  if config.compile_cache:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(config.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  from detx import train
  if _MODE.value in ('train', 'train_and_eval'):
    train.train_and_evaluate(config, workdir, do_eval=_MODE.value == 'train_and_eval',
                             file_changes=cli.file_changes(
                                 config, config_flags.get_config_filename(flags.FLAGS['config'])))
  elif _MODE.value == 'eval':
    from detx import evaluation
    evaluation.evaluate_checkpoint(config, workdir, step_dir)
  else:
    from detx import predict  # the run's config.json, this command line's overrides on top
    config, line = predict.run_config_of(
        config, config_flags.get_config_filename(flags.FLAGS['config']), workdir)
    print(f'predict: {line}', flush=True)
    predict.run(config, workdir, _INPUT.value, os.path.join(workdir, 'predictions'))


def run(argv=None) -> int:
  """`python -m detx.main ARGS` (argv[0] is the program name): the exit code, 0 or 2
  after a user mistake's one line on stderr (detx.errors.guard)."""
  argv = list(sys.argv if argv is None else argv)
  return errors.guard(lambda: main(cli.parse(argv)), argv)


if __name__ == '__main__':
  app.define_help_flags()
  sys.exit(run())
