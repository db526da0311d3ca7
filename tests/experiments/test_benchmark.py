"""experiments/benchmark.py: the table and JSON paths at a tiny size with torchvision
hidden (the comparison is skipped with a note), the synthetic R-CNN batch against the
data contract, the torchvision counterparts, and --loader on a tiny dataset. Speed is
never asserted. A real R-CNN row compared with torchvision is slow (and needs torch)."""
import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'experiments' / 'benchmark.py'
TINY_YOLO = ['--override=model.backbone.depths=(1,1,1,1,1)', '--override=model.backbone.width=0.125',
             '--override=data.max_boxes=8']
FIELDS = {'model', 'mode', 'size', 'detx_img_s', 'peer', 'peer_img_s', 'speedup', 'gflops_per_s',
          'peak_fraction', 'compile_s', 'peak_rss_mb'}


def _load():
  spec = importlib.util.spec_from_file_location('detx_experiments_benchmark', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


bench = _load()


@pytest.fixture
def no_torchvision(monkeypatch):
  """Imports of torch / torchvision fail, as where they are not installed."""
  for name in ('torch', 'torchvision'):
    monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def jax_cache_config():
  """main() changes JAX's compilation-cache settings for its process: restore them."""
  keys = ('jax_enable_compilation_cache', 'jax_compilation_cache_dir',
          'jax_persistent_cache_min_compile_time_secs')
  saved = {k: getattr(jax.config, k) for k in keys}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)


def test_tiny_table_and_json_without_torchvision(tmp_path, capsys, no_torchvision,
                                                 jax_cache_config):
  out = tmp_path / 'rows.json'
  rows = bench.main(['--models=yolov3_darknet', '--sizes=64', '--repeats=1',
                     '--compare=torchvision', f'--json={out}', '--_env_cache'] + TINY_YOLO)
  printed = capsys.readouterr().out
  assert 'torchvision not installed' in printed
  assert '| model | mode | size | batch | detx img/s | peer |' in printed
  assert 'float32 matmul peak measured in this run' in printed
  saved = json.loads(out.read_text())
  assert saved['values']['rows'] == json.loads(json.dumps(rows))
  assert {'command', 'commit', 'machine', 'date'} <= set(saved)
  assert saved['command'].startswith('python experiments/benchmark.py --models=')
  saved = saved['values']['rows']
  assert [(r['mode'], r['size'], r['batch']) for r in saved] == [('train', 64, 2), ('infer', 64, 1)]
  for r in saved:
    assert FIELDS <= set(r)
    assert r['detx_img_s'] > 0 and r['compile_s'] > 0 and r['peak_rss_mb'] > 0
    assert r['peer'] is None and r['peer_img_s'] is None and r['speedup'] is None
    assert r['compile_warm_s'] is None


def test_modes_pick_the_rows(jax_cache_config):
  rows = bench.main(['--models=yolov3_darknet', '--sizes=64', '--repeats=1', '--modes=infer',
                     '--_env_cache'] + TINY_YOLO)
  assert [(r['mode'], r['size']) for r in rows] == [('infer', 64)]
  with pytest.raises(SystemExit, match='--modes'):
    bench.main(['--models=yolov3_darknet', '--modes=inference'])


def test_markdown_fills_the_peer_columns():
  row = dict(model='m', mode='train', size='800x1344', batch=1, detx_img_s=0.5,
             peer='torchvision fasterrcnn_resnet50_fpn', peer_img_s=0.25, speedup=2.0,
             gflops_per_s=10.0, peak_fraction=0.5, compile_s=60.0, compile_warm_s=4.0,
             peak_rss_mb=1000.0, threads=2)
  table = bench.to_markdown([row], 20.0)
  assert ('| m | train | 800x1344 | 1 | 0.500 | torchvision fasterrcnn_resnet50_fpn | 0.250 | '
          '2.00x | 10.0 | 50% | 60.0 | 4.0 | 1000 |') in table


@pytest.mark.parametrize('name,pad,small', [
    ('faster_rcnn_r50_fpn_1x', (800, 1344), '160x256'),
    ('mask_rcnn_r50_fpn_1x', (800, 1344), '160x256'),
    ('retinanet_r50_fpn_1x', (896, 1408), '256x256'),  # padded to multiples of 128
])
def test_rcnn_batch_matches_the_data_contract(name, pad, small):
  from detx.data import pipelines
  from detx.models.base import build_model
  config = bench.load_config(name, {})
  assert bench.is_rcnn(config)
  batch = bench.rcnn_batch(config, 1, np.random.default_rng(0))
  pipeline = pipelines.for_config(config)
  assert tuple(pipeline.buckets('train')[0]) == pad
  ref = pipeline.padding_example(pad)
  assert set(batch) == set(ref)
  for k, v in ref.items():
    assert batch[k].shape == (1,) + np.shape(v) and batch[k].dtype == np.asarray(v).dtype, k
  module, _ = build_model(config)
  assert set(module.TRAIN_KEYS) | set(module.EVAL_KEYS) <= set(batch)
  assert tuple(batch['image_hw'][0]) == (800, 1333)
  assert not batch['image'][0, :, 1333:].any() and batch['image'][0, :, :1333].std() > 0.5
  real = batch['box_mask'][0]
  assert real.sum() == 10
  boxes = batch['boxes'][0][real]
  assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes[:, 2] < 1333).all() and (boxes[:, 3] < 800).all()
  if pipeline.with_masks:
    ids = batch['gt_poly_ids'][0]
    assert (ids[real][:, :4] == 0).all() and (ids[real][:, 4:] == -1).all()
    assert (ids[~real] == -1).all()
    np.testing.assert_allclose(batch['gt_polys'][0][real][:, 2],
                               boxes[:, 2:] / batch['scale'][0], rtol=1e-6)
  labels = [(m, s, b) for m, s, b, _ in bench.plan(name, config)]
  label = f'{pad[0]}x{pad[1]}'
  assert labels == [('train', label, 1), ('infer', label, 1)]
  train_plan = bench.plan(name, config, rcnn_batch_size=3)[0]  # --rcnn_batch=3
  assert train_plan[2] == 3 and train_plan[3](np.random.default_rng(0))['image'].shape[0] == 3
  config.data.max_size = 256  # what --sizes=256 does for R-CNN models
  assert bench.plan(name, config)[0][1] == small


def test_torchvision_counterparts():
  peer = lambda name: bench.torchvision_peer(bench.load_config(name, {}))
  assert peer('faster_rcnn_r50_fpn_1x') == 'fasterrcnn_resnet50_fpn'
  assert peer('mask_rcnn_r50_fpn_1x') == 'maskrcnn_resnet50_fpn'
  assert peer('retinanet_r50_fpn_1x') == 'retinanet_resnet50_fpn'
  assert peer('retinanet_r101_fpn_1x') is None
  assert peer('faster_rcnn_r50_1x') is None        # C4: no torchvision model
  assert peer('faster_rcnn_r101_fpn_1x') is None
  assert peer('yolov3_darknet') is None


def test_torchvision_status_without_it(no_torchvision):
  modules, note = bench.torchvision_status()
  assert modules is None and 'torchvision not installed' in note


def test_overrides_parse_literals():
  assert bench.parse_overrides(['model.backbone.depths=(1,1)', 'model.dtype=bfloat16', 'a.b=0.5']) == {
      'model.backbone.depths': (1, 1), 'model.dtype': 'bfloat16', 'a.b': 0.5}
  with pytest.raises(ValueError):
    bench.parse_overrides(['model.backbone.width'])


def test_loader_mode_on_a_tiny_dataset(shapes_dir, tmp_cache):
  pipelines = (('yolo', 'yolov3_darknet', {'data.max_boxes': 8}),
               ('rcnn', 'faster_rcnn_r50_fpn_1x', {'data.max_size': 64}))
  rows = bench.bench_loader(shapes_dir, workers=(0,), batches=2, batch_size=2,
                            pipelines=pipelines, cache_dir=tmp_cache,
                            dtypes=('float32', 'uint8'))
  assert [(r['mode'], r['image_dtype'], r['num_workers'], r['batch']) for r in rows] == [
      ('loader:yolo', 'float32', 0, 2), ('loader:yolo', 'uint8', 0, 2),
      ('loader:rcnn', 'float32', 0, 2), ('loader:rcnn', 'uint8', 0, 2)]
  assert all(r['detx_img_s'] > 0 and r['ratio'] == 1.0 for r in rows)
  # A uint8 batch: the float32 one less three quarters of its image bytes.
  image_mb = 2 * 64 * 64 * 3 * 4 / 1e6
  assert rows[3]['batch_mb'] == pytest.approx(rows[2]['batch_mb'] - 0.75 * image_mb)
  table = bench.loader_markdown(rows)
  assert '| yolo | yolov3_darknet | 320-608 | 2 | uint8 |' in table
  assert f"| rcnn | faster_rcnn_r50_fpn_1x | 64x64 | 2 | float32 | {rows[2]['batch_mb']:.1f} |" in table
  # Worker counts side by side, each with its ratio to the in-process rate.
  two = [dict(r, num_workers=2, detx_img_s=3 * r['detx_img_s'], ratio=3.0) for r in rows]
  table = bench.loader_markdown(rows + two).splitlines()
  assert table[0].endswith('| in-process img/s | 2 workers img/s | 2 workers / in-process |')
  assert len(table) == 2 + 4 and all(line.endswith('| 3.00 |') for line in table[2:])


@pytest.mark.slow
def test_rcnn_row_against_torchvision(tmp_path, jax_cache_config):
  pytest.importorskip('torchvision')
  rows = bench.main(['--models=faster_rcnn_r50_fpn_1x', '--sizes=128', '--repeats=1',
                     '--compare=torchvision', f'--compile_cache={tmp_path}'])
  assert [r['mode'] for r in rows] == ['train', 'infer']
  for r in rows:
    assert r['peer'] == 'torchvision fasterrcnn_resnet50_fpn'
    assert r['peer_img_s'] > 0 and r['speedup'] == pytest.approx(r['detx_img_s'] / r['peer_img_s'])
    assert r['compile_warm_s'] is not None and r['compile_warm_s'] > 0
