r"""Training runs whose results the README quotes, each saved as a record (experiments/record.py).

  # The quickstart in float32 and bfloat16, three seeds each, and each float32 run's
  # final checkpoint evaluated again with bfloat16 inference:
  python experiments/fits.py quickstart --seeds=0,1,2 --dtypes=float32,bfloat16 \
      --steps=800 --workdir=/tmp/fits --out=quickstart_bf16_cpu.json
  # One train size per batch against one per group of 8 images (data.size_group):
  python experiments/fits.py quickstart --seeds=0,1,2 --dtypes=float32 --steps=800 \
      --size_groups=0,8 --workdir=/tmp/fits_groups --out=quickstart_size_group_cpu.json
  # The README's first command as it is (1500 steps, one seed):
  python experiments/fits.py quickstart --seeds=0 --dtypes=float32 --steps=1500 \
      --workdir=/tmp/fits_full --out=quickstart_cpu.json
  # The slow tier's fits of 8 real COCO / VOC images (FIT_TESTS), their metrics and times
  # (tests/conftest.py's fit_record hook records each test as it ends); a subset
  # (-- -k EXPR) replaces those tests' rows in the record and keeps the others':
  python experiments/fits.py overfit --out=overfit_cpu.json [-- -k yolov3]

Each run is `python -m detx.main --config=configs/quickstart.py` in a subprocess (the
shapes data generated once under WORKDIR/shapes); its wall time, the commit it ran at,
last train/loss and final bbox/AP, AP50 go into the record with the medians per dtype and the ratio
bf16 / f32 of the median AP50s. A run already finished in WORKDIR is read, not rerun.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import record  # noqa: E402
from detx import metrics  # noqa: E402

ROOT = record.ROOT


def _final(workdir: Path) -> dict:
  rows = metrics.read_metrics(workdir)
  evals = [r for r in rows if 'bbox/AP50' in r]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  if not evals:
    return {}
  speeds = [r['train/img_per_s'] for r in rows if 'train/img_per_s' in r]
  return {'bbox/AP': evals[-1]['bbox/AP'], 'bbox/AP50': evals[-1]['bbox/AP50'],
          'step': evals[-1]['step'], 'first_loss': losses[0] if losses else None,
          'last_loss': losses[-1] if losses else None,
          'img_per_s': statistics.median(speeds) if speeds else None}


def run_quickstart(workdir: Path, seed: int, dtype: str, steps: int, size_group: int = 0
                   ) -> dict:
  out = workdir / (f'{dtype}_seed{seed}' + (f'_group{size_group}' if size_group else ''))
  done, info = _final(out), out / 'run_info.json'
  if done.get('step') == steps:  # finished earlier: its time and the commit it ran at
    return dict(done, **(json.loads(info.read_text()) if info.exists() else {}))
  cmd = [sys.executable, '-m', 'detx.main', '--config=configs/quickstart.py',
         f'--workdir={out}', f'--config.seed={seed}', f'--config.model.dtype={dtype}',
         f'--config.train.steps={steps}', f'--config.data.dir={workdir / "shapes"}',
         f'--config.data.cache_dir={workdir / "tfds"}']
  if size_group:
    cmd.append(f'--config.data.size_group={size_group}')
  t0 = time.time()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  seconds = time.time() - t0
  if r.returncode != 0:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{r.stderr[-3000:]}')
  run_info = {'seconds': seconds, 'commit': record.commit()}
  info.write_text(json.dumps(run_info))
  return dict(_final(out), **run_info)


def eval_with_dtype(workdir: Path, dtype: str) -> dict:
  """The run's final checkpoint evaluated with model.dtype=dtype (same weights)."""
  from detx import cli, sharding
  from detx import evaluation
  from detx.evaluation import loop
  config = cli.load_config_file(str(ROOT / 'configs/quickstart.py'))
  stored = json.loads((workdir / 'config.json').read_text())
  config.seed = stored['seed']
  config.data.dir, config.data.cache_dir = stored['data']['dir'], stored['data']['cache_dir']
  config.train.steps = stored['train']['steps']
  config.model.dtype = dtype
  mesh = sharding.make_mesh()
  module, state = loop.restore_state(config, str(workdir), mesh)
  result = evaluation.evaluate(config, module, state.variables(), mesh)
  return {'bbox/AP': result['bbox/AP'], 'bbox/AP50': result['bbox/AP50']}


def quickstart(args) -> dict:
  workdir = Path(args.workdir)
  seeds = [int(s) for s in args.seeds.split(',')]
  dtypes = args.dtypes.split(',')
  groups = [int(g) for g in args.size_groups.split(',')]
  if len(groups) > 1:
    return compare_size_groups(workdir, seeds, dtypes, groups, args.steps)
  runs = []
  for seed in seeds:
    for dtype in dtypes:
      row = dict(seed=seed, dtype=dtype,
                 **run_quickstart(workdir, seed, dtype, args.steps, groups[0]))
      if dtype == 'float32' and 'bfloat16' in dtypes:
        row['bf16_inference'] = eval_with_dtype(workdir / f'{dtype}_seed{seed}', 'bfloat16')
      print(json.dumps(row), flush=True)
      runs.append(row)
  values = {'steps': args.steps, 'size_group': groups[0], 'runs': runs, 'median': {}}
  for dtype in dtypes:
    ap50 = [r['bbox/AP50'] for r in runs if r['dtype'] == dtype]
    values['median'][dtype] = {'bbox/AP50': statistics.median(ap50),
                               'bbox/AP': statistics.median(
                                   [r['bbox/AP'] for r in runs if r['dtype'] == dtype]),
                               'seconds': statistics.median(
                                   [r['seconds'] for r in runs if r['dtype'] == dtype])}
  if {'float32', 'bfloat16'} <= set(dtypes):
    m = values['median']
    values['bf16_over_f32_ap50'] = m['bfloat16']['bbox/AP50'] / max(m['float32']['bbox/AP50'], 1e-9)
  return values


FIT_TESTS = ('tests/test_overfit.py', 'tests/test_overfit_rcnn.py', 'tests/data/test_voc_fit.py')


def merge_fits(old: dict | None, new: dict) -> dict:
  """The record `old` with each test that `new` ran replaced by new's runs; the other
  tests' runs are kept. Every run carries the commit and date it ran at (runs of a
  record written before runs had them take that record's)."""
  def stamped(rec):
    return {test: [dict({'commit': rec['commit'], 'date': rec['date']}, **run) for run in runs]
            for test, runs in rec.get('values', {}).items()}
  values = stamped(old) if old else {}
  values.update(stamped(new))
  return dict(new, values=dict(sorted(values.items())))


def overfit(args, extra) -> int:
  """Runs the fit tests (a subset with `-- -k EXPR`) with DETX_FIT_RECORD set to a fresh
  file, then merges it into the record (merge_fits): each test run replaces its own rows
  (model, steps, seconds, final metrics, commit), the rest of the record stays. The tests
  keep their floors."""
  out = Path(args.out) if Path(args.out).is_absolute() else record.RESULTS / args.out
  fresh = out.with_name(f'{out.name}.{os.getpid()}.run')  # runs may overlap
  fresh.unlink(missing_ok=True)
  env = dict(os.environ, DETX_FIT_RECORD=str(fresh), DETX_LONG_TESTS='1')  # `long` fits too
  cmd = [sys.executable, '-m', 'pytest', '-q', '-m', 'slow', '-n', '0', '-p',
         'no:cacheprovider', *FIT_TESTS, *extra]
  rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
  if fresh.exists():
    rec = merge_fits(record.read(out) if out.exists() else None, record.read(fresh))
    rec['command'] = record.command()
    out.write_text(json.dumps(rec, indent=2) + '\n')
    fresh.unlink()
    print('record:', out)
  return rc


def compare_size_groups(workdir: Path, seeds, dtypes, groups, steps: int) -> dict:
  """The quickstart per seed with each data.size_group (0: one train size per batch);
  runs interleaved by seed, so a drift of the machine's speed falls on both. Medians per
  group of AP50, AP, wall seconds and train img/s, and each group's over the first's."""
  runs = []
  for seed in seeds:
    for g in groups:
      row = dict(seed=seed, dtype=dtypes[0], size_group=g,
                 **run_quickstart(workdir, seed, dtypes[0], steps, g))
      print(json.dumps(row), flush=True)
      runs.append(row)
  median = {}
  for g in groups:
    mine = [r for r in runs if r['size_group'] == g]
    median[str(g)] = {k: statistics.median([r[k] for r in mine])
                      for k in ('bbox/AP50', 'bbox/AP', 'seconds', 'img_per_s')}
  first = median[str(groups[0])]
  ratios = {str(g): {k: m[k] / max(first[k], 1e-9) for k in ('bbox/AP50', 'img_per_s')}
            for g, m in ((g, median[str(g)]) for g in groups[1:])}
  return {'steps': steps, 'size_groups': groups, 'runs': runs, 'median': median,
          'over_first_group': ratios}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='what', required=True)
  q = sub.add_parser('quickstart', help='the quickstart per seed and dtype')
  q.add_argument('--seeds', default='0,1,2')
  q.add_argument('--dtypes', default='float32,bfloat16')
  q.add_argument('--steps', type=int, default=800)
  q.add_argument('--size_groups', default='0',
                 help='data.size_group values; several: compared per seed (first dtype)')
  q.add_argument('--workdir', default='/tmp/detx_fits')
  q.add_argument('--out', default='', help='record file (a bare name: experiments/results/)')
  o = sub.add_parser('overfit', help='the slow tier fits, recorded')
  o.add_argument('--out', default='overfit_cpu.json')
  argv = sys.argv[1:] if argv is None else list(argv)
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  args = p.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
  if args.what == 'overfit':
    raise SystemExit(overfit(args, extra))
  values = quickstart(args)
  print(json.dumps(values.get('median')), values.get('bf16_over_f32_ap50', ''))
  if args.out:
    print('record:', record.write(args.out, values))
  return values


if __name__ == '__main__':
  main()
