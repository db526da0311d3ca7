r"""detx entry point.

  python -m detx.main --config=configs/quickstart.py --workdir=/tmp/qs [--mode=train_and_eval]
  python -m detx.main --config=configs/yolov3_darknet.py --workdir=DIR \
      --config.data.dir=/data/coco --config.optim.base_lr=0.0005

Training resumes from the latest checkpoint in --workdir.
"""
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, metrics, logs).')
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', ['train', 'eval', 'train_and_eval', 'predict'],
                          'What to run.')
_INPUT = flags.DEFINE_string('input', None, 'predict mode: an image or a directory of images.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  config = _CONFIG.value
  logging.set_verbosity(logging.WARNING)  # orbax/tfds info lines; detx prints its own progress
  import jax  # after flag parsing, so XLA_FLAGS set by the caller apply
  from detx import distributed
  distributed.initialize()
  if config.compile_cache:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(config.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  from detx import train
  workdir = os.path.expanduser(_WORKDIR.value)
  if _MODE.value in ('train', 'train_and_eval'):
    train.train_and_evaluate(config, workdir, do_eval=_MODE.value == 'train_and_eval')
  elif _MODE.value == 'eval':
    from detx import evaluation
    evaluation.evaluate_checkpoint(config, workdir)
  else:
    from detx import predict
    if not _INPUT.value:
      raise app.UsageError('--mode=predict needs --input=IMAGE_OR_DIR')
    predict.run(config, workdir, _INPUT.value, os.path.join(workdir, 'predictions'))


if __name__ == '__main__':
  app.run(main)
