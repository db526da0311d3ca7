r"""Speed and memory of detx models, printed as a markdown table (never a timed test).

  python experiments/benchmark.py --models=yolov3_darknet,faster_rcnn_r50_fpn_1x [--json=rows.json]
  python experiments/benchmark.py --models=ssd_mobilenet_v1_voc,yolov3_mobilenet_v1 --dtype=bfloat16
  python experiments/benchmark.py --models=yolov3_darknet --sizes=608 --batch=64 --with_loader=8
  python experiments/benchmark.py --models=faster_rcnn_r50_fpn_1x --compare=torchvision
  python experiments/benchmark.py --models=mask_rcnn_r50_fpn_1x --compile_cache=/tmp/jaxcache
  python experiments/benchmark.py --models=retinanet_r50_fpn_1x --modes=infer --batch=1,8 --profile=DIR
  python experiments/benchmark.py --loader [--data_dir=shared/data/coco_tiny]
  experiments/gpu_rows.sh   (the one-shot GPU rows of issue 18; --print lists them)

For each model: train-step and inference img/s in --dtype (model.dtype: float32 or
bfloat16), compile seconds, peak RSS, the model's GFLOP per image (XLA's cost analysis of
the compiled step / batch: the train step counts forward, backward and optimizer) and the
achieved GFLOP/s as a fraction of the device's peak in that dtype (experiments/bench_peaks.py:
a vendor's dense figure for a known accelerator, TF32 for float32 on NVIDIA; on a CPU a
matmul measured in the same run, before and after the models, the better kept). XLA
counts a depthwise conv's kernel gradient as a dense conv (~C times its work), so train
rows of MobileNet models overstate their FLOPs and utilisation; inference rows do not.

Batch sizes: --batch=N[,M...] (one row per size), else BATCHES by config name or input
pipeline, one column for a CPU and one that fills an accelerator (--rcnn_batch=N, the
former flag, sets R-CNN/RetinaNet rows). YOLO rows use the zoo's square sizes (PLANS);
SSD rows the pipeline's 300. R-CNN rows (the 'rcnn' input pipeline: any such config name,
RetinaNet included) use a synthetic batch of random images put through the pipeline's
eval transform: resized to 800x1333 and padded to the first bucket of
RcnnPipeline.buckets (800x1344; RetinaNet 896x1408); --sizes=N sets data.max_size=N for
them (smaller buckets).

--with_loader=N also times the input pipeline feeding each row (experiments/bench_loader.py:
the train pipeline for a train row, the eval transform for an infer row, at the row's size
and batch, N worker processes, on --data_dir / --voc_dir by data.name) and names the side
that bounds the row ("bound: model" when the loader is faster, else "loader").

--compare=torchvision runs torchvision's counterpart of each model (experiments/bench_peer.py:
random weights, frozen BN and trainable stages as the detx config: `fasterrcnn_resnet50_fpn`,
`maskrcnn_resnet50_fpn`, `retinanet_resnet50_fpn`, `ssd300_vgg16`, and for SSD MobileNet-V1
`ssdlite320_mobilenet_v3_large`, a different model, labelled so and given no speedup) on
the same image in the same process, interleaved with detx step by step, with
torch.set_num_threads equal to the CPUs JAX uses; speedup = detx img/s / peer img/s
(medians). Install with `pip install -r experiments/requirements.txt`; without torchvision
the peer columns say "not measured".

compile s is always cold (JAX's persistent cache is off for it). With
--compile_cache=DIR the cold compile is also written to DIR/detx_benchmark
(emptied first) and a fresh process compiles the same programs from it: the
warm column, what a restart with a warm cache pays (tracing + cache load).
--profile=DIR saves a jax.profiler trace of each row's timed steps under DIR.
--dry prints the rows a command would measure (model, mode, size, batch, dtype) and
exits without compiling.

--loader times only the input pipeline (the YOLO, R-CNN and Mask R-CNN train
pipelines on --data_dir, data.num_workers in --loader_workers, data.image_dtype in
--loader_dtypes) so a user sees whether the loader or the model bottlenecks; the
table puts the in-process and N-worker rates side by side with their ratio (compare
ratios within one run: other load on the machine moves all of them).
"""
import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments import bench_loader as loader_rates, record  # noqa: E402
from experiments.bench_common import (BENCH_LR, cpu_threads, is_rcnn, load_config,  # noqa: E402,F401
                                      parse_overrides, peak_rss_mb)
from experiments.bench_loader import bench_loader, loader_markdown  # noqa: E402,F401
from experiments.bench_peaks import Peak  # noqa: E402
from experiments.bench_plan import (BATCHES, PLANS, RCNN_ORIG_HW, _yolo_batch,  # noqa: E402,F401
                                    default_batches, plan, rcnn_batch)
from experiments.bench_peer import (TorchvisionPeer, peer_label, torchvision_peer,  # noqa: E402
                                    torchvision_status, DIFFERENT_MODEL)
from detx import evaluation, sharding, train  # noqa: E402
from detx.models.base import build_model  # noqa: E402

WARM_PREFIX = 'DETX_BENCH_WARM '
DTYPES = ('float32', 'bfloat16')


def interleaved(fns, repeats: int) -> list:
  """Median seconds of each zero-argument blocking callable, after one warm-up
  call each, timed in `repeats` rounds that call them in turn (so both sides
  of a comparison see the same machine load)."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, t in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      t.append(time.perf_counter() - t0)
  return [statistics.median(t) for t in times]


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float((cost or {}).get('flops', 0.0))


# ----------------------------------------------------------------------- models ---

def _peer(name, config, compare):
  """(torchvision builder or None, its row label or None, torch available)."""
  if compare != 'torchvision':
    return None, None, False
  builder = torchvision_peer(config)
  tv, note = torchvision_status()
  if builder is None:
    print(f'  {name}: no torchvision counterpart', flush=True)
    return None, None, tv is not None
  if tv is None:
    print(f'  {name}: {note}', flush=True)
  return builder, peer_label(builder), tv is not None


def bench_model(name, peak, repeats, sizes_override=(), *, overrides=None, compare='',
                threads=None, compile_only=False, rcnn_batch_size=None,
                modes=('train', 'infer'), batches=(), dtype='float32', with_loader=None,
                loader_batches=4, data_dirs=None, profile_dir=''):
  """Rows of one model. `peak`: a bench_peaks.Peak (None with compile_only)."""
  overrides = dict(overrides or {})
  overrides.setdefault('model.dtype', dtype)
  config = load_config(name, overrides)
  if sizes_override and is_rcnn(config):
    config.data.max_size = max(sizes_override)
  mesh = sharding.make_mesh()
  module, rules = build_model(config)
  tx, lr_fn = train.make_optimizer(config, rules)
  state = train.init_state(config, module, tx, mesh)
  train_step = train.make_train_step(module, tx, lr_fn, mesh)
  eval_step = evaluation.make_eval_step(module, mesh)
  rng = np.random.default_rng(0)
  threads = threads or cpu_threads()
  platform = jax.devices()[0].platform
  peer_name, label, have_torch = _peer(name, config, compare)
  rows = []
  for mode, size, bs, make in plan(name, config, sizes_override, rcnn_batch_size, batches,
                                   platform):
    if mode not in modes:
      continue
    host = make(rng)
    batch = sharding.shard_batch(host, mesh)
    b = train.model_inputs(module, batch, mode == 'train')
    if mode == 'train':
      compiled, compile_s, flops = _compile(train_step, state, b)
    else:
      compiled, compile_s, flops = _compile(eval_step, state.variables(), b)
    if compile_only:
      rows.append(dict(model=name, mode=mode, size=size, batch=bs, compile_s=compile_s))
      continue
    if mode == 'train':
      holder = [jax.tree.map(jnp.copy, state)]

      def detx_fn():
        holder[0], m = compiled(holder[0], b)  # donates the previous state
        jax.block_until_ready(m)
    else:
      variables = state.variables()

      def detx_fn():
        jax.block_until_ready(compiled(variables, b))
    fns = [detx_fn]
    peer = None
    if peer_name and have_torch:
      peer = TorchvisionPeer(peer_name, config, host, threads, BENCH_LR)
      fns.append(peer.train_step if mode == 'train' else peer.infer)
    trace = Path(profile_dir) / f'{name}_{mode}_{size}_b{bs}_{dtype}' if profile_dir else None
    with jax.profiler.trace(str(trace)) if trace else contextlib.nullcontext():
      secs = interleaved(fns, repeats)
    if mode == 'train':
      del holder
    sec = secs[0]
    gflops = flops / sec / 1e9
    row = dict(model=name, mode=mode, size=size, batch=bs, dtype=dtype, detx_img_s=bs / sec,
               peer=label, peer_img_s=None, speedup=None, gflop_per_img=flops / bs / 1e9,
               gflops_per_s=gflops, peak_gflops=peak.gflops, peak_source=peak.source,
               peak_fraction=gflops / peak.gflops, compile_s=compile_s, compile_warm_s=None,
               peak_rss_mb=peak_rss_mb(), threads=threads,
               device_kind=jax.devices()[0].device_kind, profile=str(trace) if trace else None)
    msg = (f'  {name} {mode} {size} b{bs} {dtype}: {bs / sec:.3f} img/s, '
           f'{flops / bs / 1e9:.1f} GFLOP/img, {gflops:.1f} GFLOP/s, compile {compile_s:.1f}s')
    if peer is not None:
      row['peer_img_s'] = bs / secs[1]
      if peer_name not in DIFFERENT_MODEL:
        row['speedup'] = secs[1] / sec
      msg += f'; {label}: {bs / secs[1]:.3f} img/s'
      del peer
    if with_loader is not None:
      lconf = loader_rates.row_config(config, mode, size, bs, with_loader,
                                      (data_dirs or {}).get(config.data.name))
      rate = loader_rates.row_rate(lconf, mode, loader_batches)
      row.update(loader_workers=with_loader, loader_img_s=rate['img_s'],
                 bound=loader_rates.bound(row['detx_img_s'], rate['img_s']))
      msg += f'; loader ({with_loader} workers) {rate["img_s"]:.1f} img/s: bound by {row["bound"]}'
    rows.append(row)
    print(msg, flush=True)
  return rows


def warm_compile_seconds(name, args, cache_dir, dtype='float32') -> dict:
  """{(mode, size, batch): seconds} of compiling `name`'s programs in a fresh process
  whose persistent cache is `cache_dir` (filled by this process's compiles)."""
  cmd = [sys.executable, str(Path(__file__).resolve()), f'--models={name}',
         f'--_warm_cache_dir={cache_dir}', f'--sizes={args.sizes}', f'--rcnn_batch={args.rcnn_batch}',
         f'--modes={args.modes}', f'--batch={args.batch}', f'--dtype={dtype}']
  cmd += [f'--override={o}' for o in args.override or ()]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(WARM_PREFIX):
      data = json.loads(line[len(WARM_PREFIX):])
      if not data['cache_hits']:
        print(f'  {name}: the warm process found nothing in {cache_dir}', flush=True)
      return {(r['mode'], r['size'], r['batch']): r['compile_s'] for r in data['rows']}
  print(f'  {name}: warm compile process failed (rc {proc.returncode}):\n'
        f'{proc.stderr[-2000:]}', flush=True)
  return {}


def _fmt(v, spec):
  return '—' if v is None else format(v, spec)


def _peer_cells(r):
  if not r.get('peer'):
    return '—', '—', '—'
  if r.get('peer_img_s') is None:
    return r['peer'], 'not measured', '—'
  speedup = '—' if r.get('speedup') is None else f"{r['speedup']:.2f}x"
  return r['peer'], f"{r['peer_img_s']:.3f}", speedup


def _loader_cells(r):
  if r.get('loader_img_s') is None:
    return '—', '—'
  return f"{r['loader_img_s']:.1f} ({r['loader_workers']} workers)", r['bound']


def to_markdown(rows, peaks=()):
  """The rows as a markdown table; `peaks` (bench_peaks.Peak, one per dtype) name the
  denominators of the "of peak" column."""
  head = ('| model | mode | size | batch | detx img/s | peer | peer img/s | speedup | dtype '
          '| GFLOP/img | GFLOP/s | of peak | loader img/s | bound | compile s (cold) '
          '| compile s (warm) | peak RSS MB |\n' + '|---' * 17 + '|')
  lines = [head]
  for r in rows:
    cells = [r['model'], r['mode'], r['size'], r['batch'], f"{r['detx_img_s']:.3f}",
             *_peer_cells(r), r.get('dtype', 'float32'), _fmt(r.get('gflop_per_img'), '.2f'),
             f"{r['gflops_per_s']:.1f}", f"{r['peak_fraction']:.1%}", *_loader_cells(r),
             f"{r['compile_s']:.1f}", _fmt(r.get('compile_warm_s'), '.1f'),
             f"{r['peak_rss_mb']:.0f}"]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  tail = '\n\n' + '; '.join(f'peak: {p.gflops:.1f} GFLOP/s ({p.source})' for p in peaks)
  threads = rows[0].get('threads') if rows else None
  if threads:
    tail += f'; {threads} CPU threads (torch.set_num_threads for the peer)'
  return '\n'.join(lines) + tail


# ------------------------------------------------------------------------- main ---

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default='yolov3_darknet')
  p.add_argument('--json', default='')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--dtype', default='float32',
                 help='model.dtype of the rows: float32, bfloat16 or both (float32,bfloat16)')
  p.add_argument('--batch', default='', help='batch sizes, e.g. 64 or 1,8 (one row each); '
                 'default: BATCHES for this platform')
  p.add_argument('--rcnn_batch', type=int, default=0,
                 help='images per R-CNN/RetinaNet step (the former flag; --batch wins)')
  p.add_argument('--modes', default='train,infer', help='which rows: train, infer or both')
  p.add_argument('--sizes', default='', help='override sizes, e.g. 320 (smoke runs); '
                 'R-CNN models: data.max_size')
  p.add_argument('--compare', default='', choices=['', 'torchvision'],
                 help='run the torchvision counterpart in the same process')
  p.add_argument('--compile_cache', default='',
                 help='also report warm compile seconds from a persistent cache in DIR')
  p.add_argument('--with_loader', type=int, default=None, metavar='N',
                 help="also time each row's input pipeline with N workers (bound: model/loader)")
  p.add_argument('--profile', default='', help='save a jax.profiler trace per row under DIR')
  p.add_argument('--dry', action='store_true', help='print the planned rows and exit')
  p.add_argument('--loader', action='store_true',
                 help='time only the train input pipelines (no model)')
  p.add_argument('--data_dir', default=str(loader_rates.DEFAULT_DATA['coco']),
                 help='--loader, --with_loader: a COCO-format dir')
  p.add_argument('--voc_dir', default=str(loader_rates.DEFAULT_DATA['voc']),
                 help='--with_loader for VOC configs: the parent of VOCdevkit/')
  p.add_argument('--loader_workers', default='0,2', help='--loader: data.num_workers values')
  p.add_argument('--loader_dtypes', default='float32,uint8',
                 help='--loader: data.image_dtype values (uint8: the model normalises)')
  p.add_argument('--loader_batches', type=int, default=10,
                 help='--loader, --with_loader: timed batches')
  p.add_argument('--loader_batch_size', type=int, default=8,
                 help="--loader: batch size (0: the config's train.batch_size)")
  p.add_argument('--override', action='append', default=[],
                 help='config override KEY=VALUE (repeatable), e.g. model.backbone.width=0.125')
  p.add_argument('--_warm_cache_dir', default='', help=argparse.SUPPRESS)
  # Tests: keep the persistent cache the environment configures (compile s is then not cold).
  p.add_argument('--_env_cache', action='store_true', help=argparse.SUPPRESS)
  return p.parse_args(argv)


def save_record(path, rows, argv=None):
  """--json: the rows as a record (experiments/record.py: command, commit, machine, date)."""
  argv = sys.argv if argv is None else [__file__] + list(argv)
  record.write(Path(path).resolve(), {'rows': rows}, argv)


def _checked(args):
  """(modes, batches, sizes, overrides) of the arguments; SystemExit with one line."""
  modes = tuple(args.modes.split(','))
  if not modes or not set(modes) <= {'train', 'infer'}:
    raise SystemExit(f'--modes takes train, infer or train,infer; got {args.modes!r}')
  try:
    batches = tuple(int(b) for b in args.batch.split(',') if b)
    sizes = tuple(int(s) for s in args.sizes.split(',') if s)
  except ValueError:
    raise SystemExit(f'--batch and --sizes take integers, e.g. 64 or 1,8; got '
                     f'{args.batch!r} / {args.sizes!r}') from None
  if any(b < 1 for b in batches) or (args.with_loader is not None and args.with_loader < 0):
    raise SystemExit('--batch sizes must be >= 1 and --with_loader >= 0')
  dtypes = tuple(d for d in args.dtype.split(',') if d)
  if not dtypes or not set(dtypes) <= set(DTYPES):
    raise SystemExit(f'--dtype takes {" or ".join(DTYPES)} (or both, comma-separated); '
                     f'got {args.dtype!r}')
  args.dtypes = dtypes
  try:
    overrides = parse_overrides(args.override)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  return modes, batches, sizes, overrides


def dry_rows(args, modes, batches, sizes, overrides) -> list:
  """--dry: the rows a command would measure, from the configs alone."""
  platform = jax.devices()[0].platform
  rows = []
  for name in args.models.split(','):
    for dtype in args.dtypes:
      config = load_config(name, dict(overrides, **{'model.dtype': dtype}))
      if sizes and is_rcnn(config):
        config.data.max_size = max(sizes)
      for mode, size, bs, _ in plan(name, config, sizes, args.rcnn_batch, batches, platform):
        if mode in modes:
          rows.append(dict(model=name, mode=mode, size=size, batch=bs, dtype=dtype,
                           with_loader=args.with_loader, profile=bool(args.profile)))
  for r in rows:
    print('  ' + json.dumps(r), flush=True)
  return rows


def _models(args, modes, batches, sizes, overrides, argv):
  cache_dir = None
  if args.compile_cache:
    cache_dir = Path(args.compile_cache).expanduser().resolve() / 'detx_benchmark'
    shutil.rmtree(cache_dir, ignore_errors=True)  # so the compiles here are cold
    cache_dir.mkdir(parents=True)
    jax.config.update('jax_compilation_cache_dir', str(cache_dir))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  elif not args._env_cache:  # cold compiles even where JAX_COMPILATION_CACHE_DIR is set
    jax.config.update('jax_enable_compilation_cache', False)
  if args.compare:
    tv, note = torchvision_status()
    print(f'torchvision {tv[1].__version__}, torch {tv[0].__version__}' if tv else note, flush=True)
  peaks = {d: Peak(d) for d in args.dtypes}
  for peak in peaks.values():
    print(f'peak: {peak.gflops:.1f} GFLOP/s ({peak.source})', flush=True)
  data_dirs = {'coco': args.data_dir, 'voc': args.voc_dir}
  rows = []
  for name in args.models.split(','):
    for dtype, peak in peaks.items():
      model_rows = bench_model(name, peak, args.repeats, sizes, overrides=overrides,
                               compare=args.compare, rcnn_batch_size=args.rcnn_batch,
                               modes=modes, batches=batches, dtype=dtype,
                               with_loader=args.with_loader, loader_batches=args.loader_batches,
                               data_dirs=data_dirs, profile_dir=args.profile)
      if cache_dir is not None:
        warm = warm_compile_seconds(name, args, cache_dir, dtype)
        for r in model_rows:
          r['compile_warm_s'] = warm.get((r['mode'], r['size'], r['batch']))
      rows += model_rows
      if args.json:  # after each model, so a run cut short keeps its rows
        save_record(args.json, rows, argv)
  for peak in peaks.values():  # a measured peak: the better of before and after the models
    if peak.remeasure():
      for r in rows:
        if r['dtype'] == peak.dtype:
          r['peak_gflops'], r['peak_fraction'] = peak.gflops, r['gflops_per_s'] / peak.gflops
  print(to_markdown(rows, list(peaks.values())))
  if args.json:
    save_record(args.json, rows, argv)
  return rows


def main(argv=None):
  args = parse_args(argv)
  modes, batches, sizes, overrides = _checked(args)
  if args._warm_cache_dir:  # the warm half of --compile_cache: compile only, from the cache
    from detx import metrics
    jax.config.update('jax_compilation_cache_dir', args._warm_cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    metrics.install_compile_counter()
    rows = []
    for name in args.models.split(','):
      rows += bench_model(name, None, 0, sizes, overrides=overrides, compile_only=True,
                          rcnn_batch_size=args.rcnn_batch, modes=modes, batches=batches,
                          dtype=args.dtypes[0])
    print(WARM_PREFIX + json.dumps(
        {'rows': rows, 'cache_hits': metrics.compile_counts()['jit/cache_hits']}), flush=True)
    return rows
  if args.dry and args.loader:
    rows = [dict(mode=f'loader:{label}', model=name, num_workers=int(w), image_dtype=d)
            for label, name, _ in loader_rates.LOADER_PIPELINES
            for d in args.loader_dtypes.split(',') for w in args.loader_workers.split(',')]
    print('\n'.join('  ' + json.dumps(r) for r in rows), flush=True)
    return rows
  if args.dry:
    return dry_rows(args, modes, batches, sizes, overrides)
  dev = jax.devices()[0]
  print(f'# detx benchmark on {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s), '
        f'{cpu_threads()} CPU threads', flush=True)
  if args.loader:
    workers = tuple(int(w) for w in args.loader_workers.split(',') if w)
    dtypes = tuple(d for d in args.loader_dtypes.split(',') if d)
    rows = bench_loader(args.data_dir, workers, args.loader_batches, args.loader_batch_size,
                        dtypes=dtypes)
    print(loader_markdown(rows))
    if args.json:
      save_record(args.json, rows, argv)
    return rows
  return _models(args, modes, batches, sizes, overrides, argv)


if __name__ == '__main__':
  main()
