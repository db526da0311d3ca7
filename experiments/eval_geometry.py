r"""Paddle's evaluation geometry against the bucketed mode (issue 17, item 4): one fitted
model evaluated both ways, and the record.

Fits faster_rcnn_r50_fpn_1x (random init, BatchNorm trained, as the slow tier's phase 1 in
tests/test_overfit_rcnn.py) on the first N coco_tiny val images, then evaluates the final
checkpoint on the same images with eval.geometry='paddle' and 'bucket' (same weights, same
batches) and writes both metrics, their difference and the seconds each took:

  python experiments/eval_geometry.py --data=/work/shared/data/coco_tiny \
      --workdir=/tmp/eval_geometry --out=eval_geometry_cpu.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import record  # noqa: E402

KEYS = ('bbox/AP', 'bbox/AP50', 'bbox/AP75')


def fit_config(args):
  from detx import config as cfg
  c = cfg.load(args.config)
  c.model.pretrained = ''
  c.data.dir = args.data
  c.data.cache_dir = str(Path(args.workdir) / 'tfds')
  c.data.train_split = c.eval.split = 'val'
  c.data.train_limit = c.eval.limit = args.images
  c.data.augment = 'none'
  c.data.num_workers = 0
  c.data.max_size = args.max_size
  c.model.backbone.update(norm='bn', freeze_norm=False, freeze_at=0)
  c.model.roi.batch_size_per_im = 64
  c.train.batch_size = 4
  c.train.steps = args.steps
  c.train.log_every = 50
  c.train.checkpoint_every = 100000
  c.eval.batch_size = args.eval_batch
  c.optim.base_lr = 0.01
  c.optim.clip_norm = 10.0
  c.optim.schedule.warmup_steps = 30
  return c


def evaluate(config, workdir: str, geometry: str) -> dict:
  from detx import evaluation, sharding
  from detx.evaluation import loop
  config = config.copy_and_resolve_references()
  config.eval.geometry = geometry
  mesh = sharding.make_mesh()
  module, state = loop.restore_state(config, workdir, mesh)
  start = time.time()
  result = evaluation.evaluate(config, module, state.variables(), mesh)
  return dict({k: float(result[k]) for k in KEYS}, seconds=round(time.time() - start, 1))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--data', required=True, help='coco_tiny (COCO layout)')
  p.add_argument('--workdir', default='/tmp/detx_eval_geometry')
  p.add_argument('--out', default='eval_geometry_cpu.json')
  p.add_argument('--config', default='faster_rcnn_r50_fpn_1x')
  p.add_argument('--images', type=int, default=8)
  p.add_argument('--steps', type=int, default=200)
  p.add_argument('--max_size', type=int, default=160)
  p.add_argument('--eval_batch', type=int, default=8)
  args = p.parse_args(argv)
  from detx import train
  config = fit_config(args)
  run = str(Path(args.workdir) / 'run')
  start = time.time()
  if not (Path(run) / 'checkpoints' / str(args.steps)).exists():
    train.train_and_evaluate(config, run, do_eval=False)
  fit_seconds = round(time.time() - start, 1)
  values = {'config': args.config, 'images': args.images, 'split': 'val',
            'steps': args.steps, 'data.max_size': args.max_size,
            'eval.batch_size': args.eval_batch, 'fit_seconds': fit_seconds}
  for geometry in ('paddle', 'bucket'):
    values[geometry] = evaluate(config, run, geometry)
    print(geometry, json.dumps(values[geometry]), flush=True)
  values['paddle_minus_bucket'] = {k: round(values['paddle'][k] - values['bucket'][k], 4)
                                   for k in KEYS}
  print('record:', record.write(args.out, values))


if __name__ == '__main__':
  main()
