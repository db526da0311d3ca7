r"""The model zoo: every row with its published AP, schedule and weights.

  python -m detx.zoo                       # the table (detx.zoo_table, configs/)
  python -m detx.zoo --check --config=faster_rcnn_r50_fpn_1x --data=/data/coco \
      [--weights=PATH_OR_URL] [--config.eval.limit=500 ...]

--check evaluates released weights (default: the row's Paddle 1.x checkpoint URL,
downloaded once into the cache, see detx.weights.fetch; or a .pdparams, a Paddle
directory, a detx workdir) with the row's config on DIR's eval.split and prints the
published metrics against the measured ones. YOLOv3 rows compare at the config's
eval.size (608, or --config.eval.size=416 / 320).
"""
import sys

from absl import flags

from detx import cli, errors
from detx import config as cfg
from detx.zoo_table import ROWS, Row

ROW_BY_NAME = {r.name: r for r in ROWS}


def backbone_weights(row: Row) -> str:
  """The ImageNet (SSD: COCO) weights the row's config starts from, its model.pretrained."""
  if row.name not in cfg.names():
    return '(no config yet)'
  return cfg.load(row.name).model.get('pretrained', '') or '(none)'


def _metrics(published: dict) -> str:
  return ', '.join(f'{k.replace("bbox/", "box ").replace("segm/", "mask ")} {v}'
                   for k, v in published.items())


def table() -> list[str]:
  """The rows as text lines, in the zoo page's order."""
  lines = []
  for r in ROWS:
    lines += [f'{r.name}  [{r.dataset}, {r.schedule}]  {_metrics(r.published)}',
              f'    backbone weights: {backbone_weights(r)}',
              f'    released 1.x:     {r.v1_url}',
              f'    released 2.x:     {r.v2_url or "(none published)"}']
  return lines


def published_at(row: Row, eval_size: int) -> dict:
  """The row's published metrics that an evaluation at eval_size reproduces."""
  if row.name.startswith('yolov3'):
    key = 'voc/mAP' if row.dataset == 'voc' else 'bbox/AP'
    suffix = '' if eval_size == 608 else f'@{eval_size}'
    return {key + suffix: row.published[key + suffix]} if key + suffix in row.published else {}
  return dict(row.published)


def check(config, row: Row, weights: str, data: str) -> list[str]:
  """Evaluates `weights` with the row's config on `data`: 'metric: published P,
  measured M' lines (M in percent, as the zoo page writes them)."""
  from detx import evaluation, sharding, train
  from detx.models.base import build_model
  config.data.dir = data
  config.model.pretrained = weights
  module, rules = build_model(config)
  tx, _ = train.make_optimizer(config, rules)
  mesh = sharding.make_mesh()
  state = train.load_pretrained(config, train.init_state(config, module, tx, mesh), rules)
  results = evaluation.evaluate(config, module, state.variables(), mesh)
  published = published_at(row, config.eval.size)
  if not published:
    return [f'{row.name}: nothing published at eval.size {config.eval.size}; measured '
            + ', '.join(f'{k} {100 * results[k]:.1f}' for k in ('bbox/AP', 'segm/AP', 'voc/mAP')
                        if k in results)]
  return [f'{row.name} {k}: published {v}, measured {100 * results[k.split("@")[0]]:.1f}'
          for k, v in published.items()]


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool('check', False, 'Evaluate released weights against the published AP.',
                    flag_values=fv)
  flags.DEFINE_string('weights', '', "PATH_OR_URL (default: the row's 1.x checkpoint).",
                      flag_values=fv)
  flags.DEFINE_string('data', '', 'The dataset directory (COCO or VOC layout).', flag_values=fv)


def run(argv=None) -> int:
  """`python -m detx.zoo [--check ...]`: 0, or 2 after a one-line mistake."""
  argv = list(sys.argv if argv is None else argv)

  def main(fv, _):
    if not fv['check'].value:
      print('\n'.join(table()), flush=True)
      return
    spec = cli.config_spec(argv[1:])
    name = str(cfg.resolve(spec.partition(':')[0]).stem) if spec else ''
    if name not in ROW_BY_NAME:
      raise errors.UserError(f'--check needs --config=<zoo row>, got {spec or "none"}; the '
                             f'rows: {", ".join(ROW_BY_NAME)}')
    if not fv['data'].value:
      raise errors.UserError('--check needs --data=DIR (the dataset to evaluate on)')
    row = ROW_BY_NAME[name]
    for line in check(fv['config'].value, row, fv['weights'].value or row.v1_url,
                      fv['data'].value):
      print(line, flush=True)

  return cli.run_command(argv, _define, main, require_config=False)


if __name__ == '__main__':
  sys.exit(run())
