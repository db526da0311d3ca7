r"""Speed and memory of detx models, printed as a markdown table (never a timed test).

  python experiments/benchmark.py --models=yolov3_darknet,faster_rcnn_r50_fpn_1x [--json=rows.json]
  python experiments/benchmark.py --models=faster_rcnn_r50_fpn_1x --compare=torchvision
  python experiments/benchmark.py --models=mask_rcnn_r50_fpn_1x --compile_cache=/tmp/jaxcache
  python experiments/benchmark.py --loader [--data_dir=shared/data/coco_tiny]

For each model: train-step and inference img/s, compile seconds, peak RSS, and
achieved GFLOP/s (XLA's cost analysis of the compiled program / time) as a
fraction of a float32 matmul's GFLOP/s measured in the same run.

YOLO rows use the zoo's square sizes (PLANS). R-CNN rows (the 'rcnn' input
pipeline: any such config name, RetinaNet included) use a synthetic batch of
one random image put through the pipeline's eval transform: resized to
800x1333 and padded to the first bucket of RcnnPipeline.buckets (800x1344;
RetinaNet 896x1408); --sizes=N sets data.max_size=N for them (smaller
buckets).

--compare=torchvision runs torchvision's counterpart of each model (random
weights, frozen BN and trainable stages as the detx config: `fasterrcnn_resnet50_fpn`,
`maskrcnn_resnet50_fpn`, `retinanet_resnet50_fpn`, `ssd300_vgg16`; models
without one get none) on the same image in the same process, interleaved with
detx step by step, with torch.set_num_threads equal to the CPUs JAX uses;
speedup = detx img/s / peer img/s (medians). Install with
`pip install -r experiments/requirements.txt`; without torchvision the
comparison is skipped with a note.

compile s is always cold (JAX's persistent cache is off for it). With
--compile_cache=DIR the cold compile is also written to DIR/detx_benchmark
(emptied first) and a fresh process compiles the same programs from it: the
warm column, what a restart with a warm cache pays (tracing + cache load).

--loader times only the input pipeline (the YOLO, R-CNN and Mask R-CNN train
pipelines on --data_dir, data.num_workers in --loader_workers, data.image_dtype in
--loader_dtypes) so a user sees whether the loader or the model bottlenecks; the
table puts the in-process and N-worker rates side by side with their ratio (compare
ratios within one run: other load on the machine moves all of them).
"""
import argparse
import ast
import json
import os
import resource
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

from detx import config as cfg  # noqa: E402
from experiments import record  # noqa: E402
from detx import evaluation, sharding, train  # noqa: E402
from detx.data import loader, pipelines as input_pipelines  # noqa: E402
from detx.data.transforms import rcnn as rcnn_transforms  # noqa: E402
from detx.models.base import build_model  # noqa: E402

# model: (train sizes, inference sizes, train batch, inference batch)
PLANS = {
    'yolov3_darknet': ((608, 320), (608, 416, 320), 2, 1),
}
RCNN_BATCH = 1
# Original image size of the synthetic R-CNN batch: resized to 800x1333 at the zoo's sizes.
RCNN_ORIG_HW = (600, 1000)
WARM_PREFIX = 'DETX_BENCH_WARM '
DEFAULT_DATA = ROOT.parent / 'shared' / 'data' / 'coco_tiny'
# --loader: (label, config, overrides) per pipeline.
LOADER_PIPELINES = (
    ('yolo', 'yolov3_darknet', {}),
    ('rcnn', 'faster_rcnn_r50_fpn_1x', {}),
    ('rcnn+masks', 'mask_rcnn_r50_fpn_1x', {}),
)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_threads() -> int:
  """CPUs this process may run on: the size of XLA's CPU thread pool."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def _time(fn, *args, repeats: int):
  out = fn(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


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


def matmul_gflops(n: int = 2048, seconds: float = 1.0) -> float:
  """GFLOP/s of the fastest of a few n x n float32 matmuls (about `seconds` long)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best, start = float('inf'), time.perf_counter()
  while time.perf_counter() - start < seconds or best == float('inf'):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float((cost or {}).get('flops', 0.0))


def parse_overrides(items) -> dict:
  """['model.backbone.width=0.125', ...] -> {'model.backbone.width': 0.125}; values are Python
  literals where they parse, strings otherwise."""
  out = {}
  for item in items or ():
    if '=' not in item:
      raise ValueError(f'--override {item!r}: expected KEY=VALUE')
    key, value = item.split('=', 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    out[key.strip()] = value
  return out


# Train steps run at this lr (unless --override sets optim.base_lr): random-weight
# R-CNNs diverge in a step or two at the zoo's lr, and a step's cost does not
# depend on the lr.
BENCH_LR = 1e-6


def load_config(name: str, overrides: dict):
  config = cfg.load(name)
  config.model.pretrained = ''  # random weights: a step's cost does not depend on them
  config.optim.base_lr = BENCH_LR
  config.optim.schedule.lr_values = ()
  return cfg.override(config, overrides)


def is_rcnn(config) -> bool:
  return isinstance(input_pipelines.for_config(config), input_pipelines.RcnnPipeline)


def _yolo_batch(config, size, n, rng):
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


_batch = _yolo_batch  # the name earlier versions used


def rcnn_batch(config, n: int, rng, num_boxes: int = 10) -> dict:
  """A synthetic R-CNN train/eval batch of the pipeline's contract: n random
  RCNN_ORIG_HW images through its eval transform (resized as
  data.short_side/long_side (/max_size) say, zero-padded into the smallest
  bucket), with `num_boxes` random GT boxes each (box-filling GT masks for
  mask models)."""
  pipeline = input_pipelines.for_config(config)
  oh, ow = RCNN_ORIG_HW
  batch = pipeline.eval_batch([rng.integers(0, 256, (oh, ow, 3), np.uint8) for _ in range(n)])
  h, w = (int(v) for v in batch['image_hw'][0])
  k = min(num_boxes, pipeline.max_boxes)
  for i in range(n):
    xy = rng.uniform(0, 0.6, (k, 2)) * (w, h)
    wh = rng.uniform(0.05, 0.4, (k, 2)) * (w, h)
    batch['boxes'][i, :k] = np.concatenate([xy, np.minimum(xy + wh, (w - 1, h - 1))], -1)
    batch['classes'][i, :k] = rng.integers(0, config.model.num_classes, k)
    batch['box_mask'][i, :k] = True
    if 'gt_polys' in batch:  # each instance's polygon: its box (original pixels)
      rcnn_transforms.box_polygons(batch['boxes'][i, :k] / batch['scale'][i],
                                   batch['gt_polys'][i], batch['gt_poly_ids'][i])
  return batch


def plan(name, config, sizes_override=(), rcnn_batch_size=RCNN_BATCH):
  """[(mode, size label, batch size, make_batch(rng))] of a model."""
  if is_rcnn(config):
    pad = input_pipelines.for_config(config).train_shapes()[0]
    label = f'{pad[0]}x{pad[1]}'
    make = lambda rng: rcnn_batch(config, rcnn_batch_size, rng)
    return [('train', label, rcnn_batch_size, make), ('infer', label, rcnn_batch_size, make)]
  if name in PLANS:
    train_sizes, infer_sizes, train_bs, infer_bs = PLANS[name]
  else:
    train_sizes, infer_sizes = tuple(config.data.train_sizes)[:1], (int(config.eval.size),)
    train_bs = infer_bs = 1
  if sizes_override:
    train_sizes = infer_sizes = sizes_override
  out = []
  for mode, sizes, bs in (('train', train_sizes, train_bs), ('infer', infer_sizes, infer_bs)):
    for size in sizes:
      out.append((mode, int(size), bs, lambda rng, s=int(size), b=bs: _yolo_batch(config, s, b, rng)))
  return out


# ------------------------------------------------------------------ torchvision ---

def torchvision_status():
  """(torch, torchvision) modules, or (None, reason)."""
  try:
    import torch
    import torchvision  # noqa: F401
    from torchvision.models import detection  # noqa: F401
  except Exception as e:  # ImportError, or a broken install
    return None, f'torchvision not installed ({type(e).__name__}: {e}); comparison skipped'
  return (torch, torchvision), ''


def torchvision_peer(config) -> str | None:
  """The torchvision detection builder matching a detx config, or None."""
  m = config.model
  backbone = m.get('backbone', None) or {}
  depth = backbone.get('depth', None) if hasattr(backbone, 'get') else None
  variant = backbone.get('variant', 'b') if hasattr(backbone, 'get') else 'b'
  fpn = (m.get('neck', None) or {}).get('name', '') == 'fpn'
  if m.name in ('faster_rcnn', 'mask_rcnn', 'retinanet') and depth == 50 and variant == 'b':
    if m.name == 'retinanet':
      return 'retinanet_resnet50_fpn'
    if fpn:
      return {'faster_rcnn': 'fasterrcnn_resnet50_fpn', 'mask_rcnn': 'maskrcnn_resnet50_fpn'}[m.name]
    return None  # torchvision has no ResNet-C4 R-CNN
  if m.name == 'ssd' and str(backbone.get('name', '')).startswith('vgg16'):
    return 'ssd300_vgg16'
  return None


class TorchvisionPeer:
  """A torchvision detector run on the images of a detx batch: `infer()` and
  `train_step()` each run one blocking step of the whole batch."""

  def __init__(self, builder: str, config, batch: dict, threads: int):
    import torch
    from torch import nn
    from torchvision.models import detection
    from torchvision.ops import misc
    self.torch = torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    platform = jax.devices()[0].platform
    self.device = torch.device('cuda' if platform == 'gpu' and torch.cuda.is_available() else 'cpu')
    kwargs = dict(weights=None, weights_backbone=None, num_classes=config.model.num_classes + 1)
    if is_rcnn(config):
      pipeline = input_pipelines.for_config(config)
      kwargs.update(min_size=pipeline.short_side, max_size=pipeline.long_side)
    model = getattr(detection, builder)(**kwargs)
    backbone = config.model.get('backbone', None) or {}
    if backbone.get('freeze_norm', False):
      _freeze_batchnorm(model, nn, misc)
    _freeze_stages(model, int(backbone.get('freeze_at', 0) or 0))
    self.model = model.to(self.device)
    self.images, self.targets = self._inputs(config, batch)
    params = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.SGD(params, lr=BENCH_LR, momentum=0.9, weight_decay=1e-4)

  def _inputs(self, config, batch):
    torch = self.torch
    images, targets = [], []
    for i in range(len(batch['image'])):
      if 'image_hw' in batch:
        h, w = (int(v) for v in batch['image_hw'][i])
        boxes = batch['boxes'][i]
      else:
        h, w = batch['image'].shape[1:3]
        boxes = batch['boxes'][i] * np.array([w, h, w, h], np.float32)
      keep = np.asarray(batch['box_mask'][i], bool)
      image = torch.from_numpy(np.ascontiguousarray(batch['image'][i, :h, :w].transpose(2, 0, 1)))
      boxes = boxes[keep].astype(np.float32)
      target = {'boxes': torch.from_numpy(boxes),
                'labels': torch.from_numpy(batch['classes'][i][keep].astype(np.int64) + 1)}
      if 'gt_polys' in batch:  # torchvision wants whole-image masks: the boxes, filled
        masks = np.zeros((len(boxes), h, w), np.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
          masks[j, y0:y1 + 1, x0:x1 + 1] = 1
        target['masks'] = torch.from_numpy(masks)
      images.append(image.to(self.device))
      targets.append({k: v.to(self.device) for k, v in target.items()})
    return images, targets

  def _sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def infer(self):
    self.model.eval()
    with self.torch.inference_mode():
      self.model(self.images)
    self._sync()

  def train_step(self):
    self.model.train()
    losses = self.model(self.images, self.targets)
    loss = sum(losses.values())
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self._sync()


def _freeze_batchnorm(model, nn, misc):
  """BatchNorm2d -> FrozenBatchNorm2d (detx's norm='affine', freeze_norm)."""
  for name, child in list(model.named_children()):
    if isinstance(child, nn.BatchNorm2d):
      frozen = misc.FrozenBatchNorm2d(child.num_features, eps=child.eps)
      setattr(model, name, frozen)
    else:
      _freeze_batchnorm(child, nn, misc)


def _freeze_stages(model, freeze_at: int):
  """No gradients for the stem and ResNet stages below `freeze_at` (Paddle's
  freeze_at=2: stem + res2; torchvision's trainable_backbone_layers=3)."""
  body = getattr(getattr(model, 'backbone', None), 'body', None)
  if body is None or freeze_at <= 0:
    return
  trainable = tuple(f'layer{i}' for i in range(freeze_at, 5))
  for name, p in body.named_parameters():
    if not name.startswith(trainable):
      p.requires_grad_(False)


# ----------------------------------------------------------------------- models ---

def bench_model(name, peak, repeats, sizes_override=(), *, overrides=None, compare='',
                threads=None, compile_only=False, rcnn_batch_size=RCNN_BATCH,
                modes=('train', 'infer')):
  overrides = dict(overrides or {})
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
  peer_name, peer_note = None, ''
  if compare == 'torchvision':
    tv, peer_note = torchvision_status()
    if tv is None:
      print(f'  {name}: {peer_note}', flush=True)
    else:
      peer_name = torchvision_peer(config)
      if peer_name is None:
        print(f'  {name}: no torchvision counterpart', flush=True)
  rows = []
  for mode, size, bs, make in plan(name, config, sizes_override, rcnn_batch_size):
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
      rows.append(dict(model=name, mode=mode, size=size, compile_s=compile_s))
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
    if peer_name:
      peer = TorchvisionPeer(peer_name, config, host, threads)
      fns.append(peer.train_step if mode == 'train' else peer.infer)
    secs = interleaved(fns, repeats)
    if mode == 'train':
      del holder
    sec = secs[0]
    gflops = flops / sec / 1e9
    row = dict(model=name, mode=mode, size=size, batch=bs, detx_img_s=bs / sec,
               peer=None, peer_img_s=None, speedup=None, gflops_per_s=gflops,
               peak_fraction=gflops / peak, compile_s=compile_s, compile_warm_s=None,
               peak_rss_mb=peak_rss_mb(), threads=threads)
    msg = (f'  {name} {mode} {size}: {bs / sec:.3f} img/s, {gflops:.1f} GFLOP/s, '
           f'compile {compile_s:.1f}s')
    if peer is not None:
      row.update(peer=f'torchvision {peer_name}', peer_img_s=bs / secs[1],
                 speedup=secs[1] / sec)
      msg += f'; torchvision {peer_name}: {bs / secs[1]:.3f} img/s, speedup {secs[1] / sec:.2f}x'
      del peer
    rows.append(row)
    print(msg, flush=True)
  return rows


def warm_compile_seconds(name, args, cache_dir) -> dict:
  """{(mode, size): seconds} of compiling `name`'s programs in a fresh process
  whose persistent cache is `cache_dir` (filled by this process's compiles)."""
  cmd = [sys.executable, str(Path(__file__).resolve()), f'--models={name}',
         f'--_warm_cache_dir={cache_dir}', f'--sizes={args.sizes}', f'--rcnn_batch={args.rcnn_batch}',
         f'--modes={args.modes}']
  cmd += [f'--override={o}' for o in args.override or ()]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(WARM_PREFIX):
      data = json.loads(line[len(WARM_PREFIX):])
      if not data['cache_hits']:
        print(f'  {name}: the warm process found nothing in {cache_dir}', flush=True)
      return {(r['mode'], r['size']): r['compile_s'] for r in data['rows']}
  print(f'  {name}: warm compile process failed (rc {proc.returncode}):\n'
        f'{proc.stderr[-2000:]}', flush=True)
  return {}


def _fmt(v, spec):
  return '—' if v is None else format(v, spec)


def to_markdown(rows, peak):
  head = ('| model | mode | size | batch | detx img/s | peer | peer img/s | speedup | GFLOP/s '
          '| of matmul peak | compile s (cold) | compile s (warm) | peak RSS MB |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  lines = [head] + [
      f"| {r['model']} | {r['mode']} | {r['size']} | {r['batch']} | {r['detx_img_s']:.3f} | "
      f"{r['peer'] or '—'} | {_fmt(r['peer_img_s'], '.3f')} | "
      f"{_fmt(r['speedup'], '.2f')}{'x' if r['speedup'] is not None else ''} | "
      f"{r['gflops_per_s']:.1f} | {r['peak_fraction']:.0%} | {r['compile_s']:.1f} | "
      f"{_fmt(r.get('compile_warm_s'), '.1f')} | {r['peak_rss_mb']:.0f} |" for r in rows]
  threads = rows[0].get('threads') if rows else None
  tail = f'\n\nfloat32 matmul peak measured in this run: {peak:.1f} GFLOP/s'
  if threads:
    tail += f'; {threads} CPU threads (torch.set_num_threads for the peer)'
  return '\n'.join(lines) + tail


# ----------------------------------------------------------------------- loader ---

def bench_loader(data_dir, workers=(0, 2), batches: int = 10, batch_size: int = 8,
                 pipelines=LOADER_PIPELINES, cache_dir: str = '',
                 dtypes=('float32',)) -> list:
  """Images/s of the train input pipelines alone (first batch excluded: it
  includes starting the workers), for each data.image_dtype in `dtypes` and each
  data.num_workers in `workers`. A row's `ratio` is its img/s over the in-process
  (0 workers) row of the same pipeline and dtype (None without one); `batch_mb` is
  what one batch weighs, what crosses from a worker to the main process."""
  rows = []
  for label, name, overrides in pipelines:
    config = load_config(name, overrides)
    config.data.dir = str(data_dir)
    if cache_dir:
      config.data.cache_dir = str(cache_dir)
    if batch_size:
      config.train.batch_size = batch_size
    bs = int(config.train.batch_size)
    dataset = loader.build(config, config.data.train_split)  # prepared once, not timed
    for dtype in dtypes:
      config.data.image_dtype = dtype
      base = None
      for nw in workers:
        config.data.num_workers = nw
        row = _loader_row(config, dataset, batches)
        row.update(model=name, mode=f'loader:{label}', batch=bs, num_workers=nw,
                   image_dtype=dtype, peer=None, peer_img_s=None, speedup=None,
                   gflops_per_s=None, peak_fraction=None, compile_s=None,
                   peak_rss_mb=peak_rss_mb())
        base = row['detx_img_s'] if nw == 0 else base
        row['ratio'] = row['detx_img_s'] / base if base else None
        rows.append(row)
        print(f'  loader {label} ({name}) {dtype} workers={nw}: {row["detx_img_s"]:.1f} '
              f'img/s (first batch {row["first_batch_s"]:.1f}s)', flush=True)
  return rows


def _loader_row(config, dataset, batches: int) -> dict:
  """Times `batches` train batches of config's pipeline after the first."""
  pipeline = input_pipelines.for_config(config)
  it = pipeline.train_iterator(dataset)
  try:
    t_start = time.perf_counter()
    batch = next(it)
    first = time.perf_counter() - t_start
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    sec = time.perf_counter() - t0
  finally:
    close = getattr(it, 'close', None)
    if close is not None:
      close()
  if is_rcnn(config):
    shape = ' or '.join(f'{h}x{w}' for h, w in pipeline.train_shapes())
  else:
    sizes = [h for h, _ in pipeline.train_shapes()]
    shape = f'{min(sizes)}-{max(sizes)}' if len(sizes) > 1 else str(sizes[0])
  return dict(size=shape, detx_img_s=batches * len(batch['image']) / sec,
              first_batch_s=first,
              batch_mb=sum(v.nbytes for v in batch.values()) / 1e6)


def loader_markdown(rows) -> str:
  """One line per pipeline and image dtype: img/s at each worker count side by side,
  and each count's ratio to the in-process rate."""
  workers = sorted({r['num_workers'] for r in rows})
  groups = {}
  for r in rows:
    groups.setdefault((r['mode'], r['model'], r.get('image_dtype', 'float32')), []).append(r)
  ratios = [w for w in workers if w and 0 in workers]
  head = ('| pipeline | config | sizes | batch | image | MB/batch | '
          + ' | '.join('in-process img/s' if w == 0 else f'{w} workers img/s' for w in workers)
          + ''.join(f' | {w} workers / in-process' for w in ratios) + ' |')
  lines = [head, '|' + '---|' * (6 + len(workers) + len(ratios))]
  for (mode, model, dtype), group in groups.items():
    by = {r['num_workers']: r for r in group}
    first = group[0]
    cells = [mode.split(':', 1)[1], model, first['size'], str(first['batch']), dtype,
             f"{first['batch_mb']:.1f}"]
    cells += [f"{by[w]['detx_img_s']:.1f}" if w in by else '' for w in workers]
    cells += [f"{by[w]['ratio']:.2f}" if w in by and by[w]['ratio'] else '' for w in ratios]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


# ------------------------------------------------------------------------- main ---

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default='yolov3_darknet')
  p.add_argument('--json', default='')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--rcnn_batch', type=int, default=RCNN_BATCH,
                 help='images per R-CNN/RetinaNet step (1: the issue\'s latency rows; '
                 'more for accelerator throughput)')
  p.add_argument('--modes', default='train,infer', help='which rows: train, infer or both')
  p.add_argument('--sizes', default='', help='override sizes, e.g. 320 (smoke runs); '
                 'R-CNN models: data.max_size')
  p.add_argument('--compare', default='', choices=['', 'torchvision'],
                 help='run the torchvision counterpart in the same process')
  p.add_argument('--compile_cache', default='',
                 help='also report warm compile seconds from a persistent cache in DIR')
  p.add_argument('--loader', action='store_true',
                 help='time only the train input pipelines (no model)')
  p.add_argument('--data_dir', default=str(DEFAULT_DATA), help='--loader: a COCO-format dir')
  p.add_argument('--loader_workers', default='0,2', help='--loader: data.num_workers values')
  p.add_argument('--loader_dtypes', default='float32,uint8',
                 help='--loader: data.image_dtype values (uint8: the model normalises)')
  p.add_argument('--loader_batches', type=int, default=10, help='--loader: timed batches')
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


def main(argv=None):
  args = parse_args(argv)
  modes = tuple(args.modes.split(','))
  if not modes or not set(modes) <= {'train', 'infer'}:
    raise SystemExit(f'--modes takes train, infer or train,infer; got {args.modes!r}')
  overrides = parse_overrides(args.override)
  sizes = tuple(int(s) for s in args.sizes.split(',') if s)
  if args._warm_cache_dir:  # the warm half of --compile_cache: compile only, from the cache
    from detx import metrics
    jax.config.update('jax_compilation_cache_dir', args._warm_cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    metrics.install_compile_counter()
    rows = []
    for name in args.models.split(','):
      rows += bench_model(name, 1.0, 0, sizes, overrides=overrides, compile_only=True,
                          rcnn_batch_size=args.rcnn_batch, modes=modes)
    print(WARM_PREFIX + json.dumps(
        {'rows': rows, 'cache_hits': metrics.compile_counts()['jit/cache_hits']}), flush=True)
    return rows
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
  peak = matmul_gflops()
  print(f'float32 matmul: {peak:.1f} GFLOP/s', flush=True)
  rows = []
  for name in args.models.split(','):
    model_rows = bench_model(name, peak, args.repeats, sizes, overrides=overrides,
                             compare=args.compare, rcnn_batch_size=args.rcnn_batch,
                             modes=modes)
    if cache_dir is not None:
      warm = warm_compile_seconds(name, args, cache_dir)
      for r in model_rows:
        r['compile_warm_s'] = warm.get((r['mode'], r['size']))
    rows += model_rows
    if args.json:  # after each model, so a run cut short keeps its rows
      save_record(args.json, rows, argv)
  # The peak is the best of a measurement before and after the models, so a
  # busy machine shows as a low peak fraction rather than an inflated one.
  after = matmul_gflops()
  if after > peak:
    for r in rows:
      r['peak_fraction'] = r['gflops_per_s'] / after
    peak = after
  print(to_markdown(rows, peak))
  if args.json:
    save_record(args.json, rows, argv)
  return rows


if __name__ == '__main__':
  main()
