r"""Released weights -> a detx checkpoint that `--mode=eval` and `detx.predict` load.

  python -m detx.weights.convert SRC --config=NAME_OR_PATH --out=DIR \
      [--config.key=value ...] [--categories=instances_val2017.json]

SRC is anything model.pretrained takes: a Paddle 1.x directory, .tar or `__params__`,
a PaddleDetection 2.x .pdparams, an http(s) URL (downloaded once into the cache, see
detx.weights.fetch) or a detx workdir. DIR gets config.json and checkpoints/0/ (the
config's model with SRC's weights; what SRC lacks is listed and keeps its initial
value), and categories.json from a COCO annotation file when --categories is given
(else predict numbers the classes). Then:

  python -m detx.main --config=NAME --workdir=DIR --mode=eval --config.data.dir=COCO
  python -m detx.predict --config=NAME --checkpoint=DIR --input=IMAGES --output=OUT
"""
import json
import sys
from pathlib import Path

from absl import flags

from detx import cli, errors


def convert(config, source: str, out, categories: str = '') -> Path:
  """Writes DIR as the module docstring says; returns its step directory."""
  import jax
  from detx import checkpoint, sharding, train
  from detx.models.base import build_model
  out = Path(out).expanduser()
  if checkpoint.latest_step_dir(out) is not None:
    raise errors.WorkdirError(f'--out {out} already holds a checkpoint; give a new directory')
  if not source:
    raise errors.UserError('give the weights to convert: a path or URL before the flags')
  config.model.pretrained = str(source)
  module, rules = build_model(config)
  tx, _ = train.make_optimizer(config, rules)
  state = train.init_state(config, module, tx, sharding.make_mesh())
  state = train.load_pretrained(config, state, rules)
  cats = None
  if categories:
    path = Path(categories).expanduser()
    if not path.is_file():
      raise errors.PathError(f'--categories {path} does not exist')
    cats = [{'id': int(c['id']), 'name': c['name']}
            for c in json.loads(path.read_text()).get('categories', [])]
  train.write_config(config, out)
  if cats:
    (out / 'categories.json').write_text(json.dumps(cats))
  ckpt = checkpoint.Checkpointer(out, keep=1)
  ckpt.save(int(jax.device_get(state.step)), state.as_dict(), force=True)
  ckpt.close()
  step_dir = checkpoint.latest_step_dir(out)
  print(f'detx: wrote {step_dir} ({config.model.name}, {config.model.num_classes} classes)',
        flush=True)
  return step_dir


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('out', None, 'The directory to write (a new workdir).', flag_values=fv)
  flags.DEFINE_string('categories', '', 'A COCO annotation json whose categories the '
                      'checkpoint detects (written to DIR/categories.json).', flag_values=fv)


def _main(fv: flags.FlagValues, rest: list) -> None:
  if not fv['out'].value:
    raise errors.UserError('--out=DIR is required')
  if len(rest) != 2:
    raise errors.UserError('give exactly one source (a path or URL) before the flags, '
                           f'got {rest[1:] or "none"}')
  convert(fv['config'].value, rest[1], fv['out'].value, fv['categories'].value)


def run(argv=None) -> int:
  """`python -m detx.weights.convert SRC --config=... --out=DIR`: 0, or 2 after one line."""
  return cli.run_command(list(sys.argv if argv is None else argv), _define, _main)


if __name__ == '__main__':
  sys.exit(run())
