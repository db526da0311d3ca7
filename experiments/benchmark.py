r"""Speed and memory of detx models, printed as a markdown table (never a timed test).

  python experiments/benchmark.py --models=yolov3_darknet [--json=rows.json]

For each model: train-step and inference img/s at the zoo's sizes, compile seconds,
peak RSS, and achieved GFLOP/s (XLA's cost analysis of the compiled program / time)
as a fraction of a float32 matmul's GFLOP/s measured in the same run.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from detx import config as cfg  # noqa: E402
from detx import sharding, train  # noqa: E402
from detx.models import build_model  # noqa: E402

# model: (train sizes, inference sizes, train batch, inference batch)
PLANS = {
    'yolov3_darknet': ((608, 320), (608, 416, 320), 2, 1),
}


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, *args, repeats: int):
  out = fn(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / _time(f, a, repeats=repeats) / 1e9


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float((cost or {}).get('flops', 0.0))


def _batch(config, size, n, rng):
  m = config.data.max_boxes
  xy = rng.uniform(0, 0.6, (n, m, 2))
  wh = rng.uniform(0.05, 0.4, (n, m, 2))
  return {
      'image': rng.standard_normal((n, size, size, 3)).astype(np.float32),
      'boxes': np.concatenate([xy, xy + wh], -1).astype(np.float32),
      'classes': rng.integers(0, config.model.num_classes, (n, m)).astype(np.int32),
      'scores': np.ones((n, m), np.float32),
      'box_mask': (np.arange(m) < 10)[None].repeat(n, 0),
      'orig_size': np.full((n, 2), size, np.int32),
  }


def bench_model(name, peak, repeats, sizes_override=None):
  config = cfg.load(name)
  train_sizes, infer_sizes, train_bs, infer_bs = PLANS[name]
  if sizes_override:
    train_sizes = infer_sizes = sizes_override
  mesh = sharding.make_mesh()
  module, rules = build_model(config)
  tx, lr_fn = train.make_optimizer(config, rules)
  state = train.init_state(config, module, tx, mesh)
  train_step = train.make_train_step(module, tx, lr_fn, mesh)
  eval_step = train.make_eval_step(module, mesh)
  rng = np.random.default_rng(0)
  rows = []
  for mode, sizes, bs in (('train', train_sizes, train_bs), ('infer', infer_sizes, infer_bs)):
    for size in sizes:
      batch = sharding.shard_batch(_batch(config, size, bs, rng), mesh)
      if mode == 'train':
        b = train.model_inputs(module, batch, True)
        compiled, compile_s, flops = _compile(train_step, state, b)
        st = jax.tree.map(jnp.copy, state)
        out = compiled(st, b)  # warm-up (donates st)
        jax.block_until_ready(out)
        st = out[0]
        t0 = time.perf_counter()
        for _ in range(repeats):
          st, m = compiled(st, b)
        jax.block_until_ready(m)
        sec = (time.perf_counter() - t0) / repeats
      else:
        b = train.model_inputs(module, batch, False)
        compiled, compile_s, flops = _compile(eval_step, state.variables(), b)
        sec = _time(compiled, state.variables(), b, repeats=repeats)
      gflops = flops / sec / 1e9
      rows.append(dict(model=name, mode=mode, size=size, batch=bs, detx_img_s=bs / sec,
                       peer=None, peer_img_s=None, speedup=None, gflops_per_s=gflops,
                       peak_fraction=gflops / peak, compile_s=compile_s,
                       peak_rss_mb=peak_rss_mb()))
      print(f'  {name} {mode} {size}: {bs / sec:.3f} img/s, {gflops:.1f} GFLOP/s, '
            f'compile {compile_s:.1f}s', flush=True)
  return rows


def to_markdown(rows, peak):
  head = ('| model | mode | size | batch | img/s | GFLOP/s | of matmul peak | compile s | peak RSS MB |\n'
          '|---|---|---|---|---|---|---|---|---|')
  lines = [head] + [
      f"| {r['model']} | {r['mode']} | {r['size']} | {r['batch']} | {r['detx_img_s']:.3f} | "
      f"{r['gflops_per_s']:.1f} | {r['peak_fraction']:.0%} | {r['compile_s']:.1f} | "
      f"{r['peak_rss_mb']:.0f} |" for r in rows]
  return '\n'.join(lines) + f'\n\nfloat32 matmul peak measured in this run: {peak:.1f} GFLOP/s'


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default='yolov3_darknet')
  p.add_argument('--json', default='')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--sizes', default='', help='override sizes, e.g. 320 (smoke runs)')
  args = p.parse_args()
  dev = jax.devices()[0]
  print(f'# detx benchmark on {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)')
  peak = matmul_gflops()
  print(f'float32 matmul: {peak:.1f} GFLOP/s', flush=True)
  sizes = tuple(int(s) for s in args.sizes.split(',') if s)
  rows = []
  for name in args.models.split(','):
    rows += bench_model(name, peak, args.repeats, sizes)
  # The peak is the best of a measurement before and after the models, so a
  # busy machine shows as a low peak fraction rather than an inflated one.
  after = matmul_gflops()
  if after > peak:
    for r in rows:
      r['peak_fraction'] = r['gflops_per_s'] / after
    peak = after
  print(to_markdown(rows, peak))
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == '__main__':
  main()
