import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from detx import checkpoint, evaluation, metrics, sharding, train
from detx.models.base import build_model
from tests.helpers import flat_params, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _final_params(config, workdir):
  mesh = sharding.make_mesh()
  module, rules = build_model(config)
  tx, _ = train.make_optimizer(config, rules)
  state = train.init_state(config, module, tx, mesh)
  restored = checkpoint.restore_variables(workdir, state.as_dict())
  return flat_params(restored['params']), int(restored['step'])


def test_train_writes_workdir_and_resumes_exactly(tmp_path):
  c = tiny_config(tmp_path, steps=6, sizes=(64, 96))
  full, split = tmp_path / 'full', tmp_path / 'split'
  train.train_and_evaluate(c, str(full), do_eval=False)
  c_stop = tiny_config(tmp_path, steps=6, sizes=(64, 96))
  c_stop.train.stop_at = 3
  train.train_and_evaluate(c_stop, str(split), do_eval=False)
  assert sorted(p.name for p in (split / 'checkpoints').iterdir() if p.name.isdigit()) == ['3']
  train.train_and_evaluate(c, str(split), do_eval=False)
  a, step_a = _final_params(c, full)
  b, step_b = _final_params(c, split)
  assert step_a == step_b == 6
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
  assert (full / 'config.json').is_file() and list((full / 'tensorboard').iterdir())
  rows = [json.loads(l) for l in (full / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all({'train/loss', 'train/lr', 'jit/compiles'} <= set(r) for r in rows)


def test_size_groups_train_one_program_per_size(tmp_path):
  """data.size_group 2 of a batch of 4: two group batches per step, at their own sizes
  (both sizes among the first step's groups here), one gradient program per size."""
  from detx.data import loader, pipelines
  c = tiny_config(tmp_path, steps=3, sizes=(64, 96), **{'data.size_group': 2})
  it = pipelines.for_config(c).train_iterator(loader.build(c, 'train'))
  first = [next(it)['image'].shape[1] for _ in range(2)]
  it.close()
  assert sorted(first) == [64, 96], first
  workdir = tmp_path / 'run'
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  rows = [r for r in metrics.read_metrics(workdir) if 'train/loss' in r]
  assert [r['step'] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r['train/loss']) for r in rows)
  assert rows[-1]['jit/compiles'] == rows[0]['jit/compiles']  # both sizes seen at step 1


def test_no_new_compiles_after_warmup(tmp_path):
  c = tiny_config(tmp_path, steps=8, sizes=(64, 96))
  workdir = tmp_path / 'run'
  result = train.train_and_evaluate(c, str(workdir))
  assert 'bbox/AP50' in result
  train_rows = [r for r in metrics.read_metrics(workdir) if 'train/loss' in r]
  sizes_seen_by = 4  # both buckets appear within the first steps (checked below)
  assert train_rows[-1]['jit/compiles'] == train_rows[sizes_seen_by]['jit/compiles']
  # Evaluation: after the first pass, a second pass over the split compiles nothing.
  mesh = sharding.make_mesh()
  module, rules = build_model(c)
  tx, _ = train.make_optimizer(c, rules)
  state = train.init_state(c, module, tx, mesh)
  eval_step = evaluation.make_eval_step(module, mesh)
  evaluation.evaluate(c, module, state.variables(), mesh, eval_step)
  before = metrics.compile_counts()['jit/compiles']
  evaluation.evaluate(c, module, state.variables(), mesh, eval_step)
  assert metrics.compile_counts()['jit/compiles'] == before


_SHARD_SCRIPT = r'''
import sys, numpy as np, jax
sys.path.insert(0, {root!r})
from detx import sharding, train
from detx.models.base import build_model
from tests.helpers import tiny_config, flat_params
from pathlib import Path
c = tiny_config(Path({tmp!r}), steps=2)
c.train.batch_size = 4
mesh = sharding.make_mesh()
module, rules = build_model(c)
tx, lr_fn = train.make_optimizer(c, rules)
state = train.init_state(c, module, tx, mesh)
init = flat_params(state.params)
step = train.make_train_step(module, tx, lr_fn, mesh)
from detx.data import loader, pipelines
ds = loader.build(c, 'train')
it = pipelines.for_config(c).train_iterator(ds)
losses = []
for _ in range(2):
  b = next(it)
  state, m = step(state, sharding.shard_batch(train.model_inputs(module, b, True), mesh))
  losses.append(float(m['train/loss']))
final = flat_params(state.params)
np.savez({out!r}, losses=np.array(losses), **{{k: final[k] - init[k] for k in final}})
print(jax.device_count())
'''


def test_one_and_four_devices_agree(tmp_path):
  tiny_config(tmp_path)  # generate the data once
  outs = {}
  for n in (1, 4):
    out = tmp_path / f'dev{n}.npz'
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')
    script = _SHARD_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path), out=str(out))
    r = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(n)
    outs[n] = dict(np.load(out))
  np.testing.assert_allclose(outs[1]['losses'], outs[4]['losses'], rtol=1e-5)
  # The two-step parameter updates agree up to float reassociation (amplified by
  # BatchNorm on a 4-image batch): compare each tensor's update by its norm.
  for k in outs[1]:
    if k == 'losses':
      continue
    a, b = outs[1][k], outs[4][k]
    assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(a) + 1e-7, k


def test_same_seed_same_losses_and_tensorboard_images(tmp_path):
  runs = []
  for name in ('a', 'b'):
    c = tiny_config(tmp_path, steps=20, sizes=(64, 96))
    train.train_and_evaluate(c, str(tmp_path / name))
    runs.append([r['train/loss'] for r in metrics.read_metrics(tmp_path / name) if 'train/loss' in r])
  assert len(runs[0]) == 20 and runs[0] == runs[1]
  from tensorboardX.proto import event_pb2  # noqa: F401  (events are readable protobufs)
  events = list((tmp_path / 'a' / 'tensorboard').iterdir())
  assert events and b'predictions/' in b''.join(e.read_bytes() for e in events)


def test_rcnn_eval_compiles_once_per_bucket(coco_tiny_dir, tmp_path, monkeypatch):
  """An R-CNN evaluation over the 80 coco_tiny val images compiles programs only on the
  first batch of each pad bucket (a shallow R50-FPN at data.max_size 128)."""
  from detx import config as cfg
  from detx.data import pipelines
  from detx.models.backbones import resnet
  monkeypatch.setitem(resnet.BLOCKS, 50, (1, 1, 1, 1))
  c = cfg.load('faster_rcnn_r50_fpn_1x')
  c.data.dir = str(coco_tiny_dir)
  c.data.cache_dir = str(tmp_path / 'tfds')
  c.data.max_size = 128
  c.data.num_workers = 0
  c.eval.batch_size = 2
  c.model.rpn.update(test_pre_nms_top_n=128, test_post_nms_top_n=64, test_collect_top_n=64)
  c.model.nms.update(max_candidates=256, keep_top_k=20)
  metrics.install_compile_counter()
  mesh = sharding.make_mesh()
  module, rules = build_model(c)
  tx, _ = train.make_optimizer(c, rules)
  state = train.init_state(c, module, tx, mesh)
  inner = evaluation.make_eval_step(module, mesh)
  seen, log = set(), []
  total = lambda: sum(metrics.compile_counts().values())  # compiles + persistent-cache hits
  last = [total()]

  def counted(variables, batch):
    shape = tuple(batch['image'].shape[1:3])
    between = total() - last[0]  # compiled by the loop between two eval steps
    before = total()
    out = jax.block_until_ready(inner(variables, batch))
    last[0] = total()
    log.append((shape, shape in seen, last[0] - before + (between if log else 0)))
    seen.add(shape)
    return out

  result = evaluation.evaluate(c, module, state.variables(), mesh, counted)
  assert result['eval/images'] == 80
  assert len(log) == 40
  buckets = set(pipelines.for_config(c).buckets('eval'))
  assert seen <= buckets and len(seen) >= 2, (seen, buckets)
  assert all(n > 0 for _, again, n in log if not again), log
  assert all(n == 0 for _, again, n in log if again), log
