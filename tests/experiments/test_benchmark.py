"""experiments/benchmark.py (and its experiments/bench_*.py modules): the table and JSON
paths at a tiny size in bfloat16 with torchvision hidden (the comparison is skipped with a
note) and each row's loader rate, the rows planned per model / platform / --batch, the
synthetic R-CNN and SSD batches against the data contracts, the torchvision counterparts,
the table of known peaks, experiments/gpu_rows.sh's commands (through --dry), and --loader
on a tiny dataset. Speed is never asserted. A real R-CNN row compared with torchvision is
slow (and needs torch)."""
import importlib.util
import json
import shlex
import subprocess
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
          'peak_fraction', 'compile_s', 'peak_rss_mb', 'dtype', 'gflop_per_img', 'peak_gflops',
          'peak_source', 'loader_workers', 'loader_img_s', 'bound', 'device_kind'}


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
                                                 jax_cache_config, shapes_dir, tmp_cache):
  out = tmp_path / 'rows.json'
  rows = bench.main(['--models=yolov3_darknet', '--sizes=64', '--repeats=1', '--dtype=bfloat16',
                     '--compare=torchvision', f'--json={out}', '--_env_cache',
                     '--with_loader=0', '--loader_batches=1', f'--data_dir={shapes_dir}',
                     f'--override=data.cache_dir={tmp_cache}'] + TINY_YOLO)
  printed = capsys.readouterr().out
  assert 'torchvision not installed' in printed
  assert '| model | mode | size | batch | detx img/s | peer |' in printed
  assert 'GFLOP/s (bfloat16 matmul measured in this run)' in printed
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
    # model.dtype, FLOPs per image and utilisation against the bfloat16 matmul measured
    assert r['dtype'] == 'bfloat16' and r['device_kind'] == jax.devices()[0].device_kind
    assert r['gflop_per_img'] > 0
    assert r['gflops_per_s'] == pytest.approx(r['gflop_per_img'] * r['detx_img_s'])
    assert r['peak_source'] == 'bfloat16 matmul measured in this run'
    assert r['peak_fraction'] == pytest.approx(r['gflops_per_s'] / r['peak_gflops'])
    # --with_loader: the row's pipeline on the same batch, and the side that bounds
    assert r['loader_workers'] == 0 and r['loader_img_s'] > 0
    assert r['bound'] == ('loader' if r['loader_img_s'] < r['detx_img_s'] else 'model')


def test_modes_batches_and_dtypes_pick_the_rows():
  rows = bench.main(['--models=yolov3_darknet', '--sizes=64', '--modes=infer', '--dry',
                     '--batch=1,4', '--dtype=float32,bfloat16'])
  assert [(r['mode'], r['size'], r['batch'], r['dtype']) for r in rows] == [
      ('infer', 64, 1, 'float32'), ('infer', 64, 4, 'float32'),
      ('infer', 64, 1, 'bfloat16'), ('infer', 64, 4, 'bfloat16')]
  for bad, message in (('--modes=inference', '--modes'), ('--dtype=float16', '--dtype'),
                       ('--batch=0', '--batch'), ('--batch=a', '--batch')):
    with pytest.raises(SystemExit, match=message):
      bench.main(['--models=yolov3_darknet', bad, '--dry'])


def test_markdown_fills_the_peer_and_loader_columns():
  row = dict(model='m', mode='train', size='800x1344', batch=1, detx_img_s=0.5,
             peer='torchvision fasterrcnn_resnet50_fpn', peer_img_s=0.25, speedup=2.0,
             dtype='bfloat16', gflop_per_img=20.0, gflops_per_s=10.0, peak_fraction=0.5,
             compile_s=60.0, compile_warm_s=4.0, peak_rss_mb=1000.0, threads=2,
             loader_workers=2, loader_img_s=0.4, bound='loader')
  ssd = dict(row, model='ssd_mobilenet_v1_voc', peer=bench.peer_label(
      'ssdlite320_mobilenet_v3_large'), peer_img_s=None, speedup=None, loader_img_s=None)
  peak = type('Peak', (), dict(gflops=20.0, source='bfloat16 matmul measured in this run'))
  table = bench.to_markdown([row, ssd], [peak])
  assert ('| m | train | 800x1344 | 1 | 0.500 | torchvision fasterrcnn_resnet50_fpn | 0.250 | '
          '2.00x | bfloat16 | 20.00 | 10.0 | 50.0% | 0.4 (2 workers) | loader | 60.0 | 4.0 '
          '| 1000 |') in table
  assert ('| torchvision ssdlite320_mobilenet_v3_large (different model: SSDlite 320x320, '
          'MobileNet-V3-Large) | not measured | — | bfloat16 |') in table
  assert '| 50.0% | — | — | 60.0 |' in table
  assert 'peak: 20.0 GFLOP/s (bfloat16 matmul measured in this run)' in table


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
  assert peer('yolov3_mobilenet_v1') is None
  # SSD300 MobileNet-V1 has no torchvision twin: SSDlite320 MobileNet-V3, labelled as another model
  assert peer('ssd_mobilenet_v1_voc') == 'ssdlite320_mobilenet_v3_large'
  assert 'different model' in bench.peer_label('ssdlite320_mobilenet_v3_large')
  assert bench.peer_label('fasterrcnn_resnet50_fpn') == 'torchvision fasterrcnn_resnet50_fpn'


@pytest.mark.parametrize('name,size', [('ssd_mobilenet_v1_voc', 300), ('yolov3_mobilenet_v1', 608)])
def test_single_stage_rows(name, size):
  """Sizes and default batches per platform, --batch lists, and a synthetic batch of the
  model's contract (the pipeline's padding element's keys, shapes and dtypes)."""
  from detx.data import pipelines
  from detx.models.base import build_model
  config = bench.load_config(name, {})
  rows = lambda *a, **k: [(m, s, b) for m, s, b, _ in bench.plan(name, config, *a, **k)]
  assert rows() == [('train', size, 2), ('infer', size, 1)]
  gpu = 256 if name.startswith('ssd') else 64
  assert rows(platform='gpu') == [('train', size, gpu), ('infer', size, gpu)]
  assert rows(batches=(1, 8)) == [('train', size, 1), ('train', size, 8),
                                  ('infer', size, 1), ('infer', size, 8)]
  batch = bench.plan(name, config, (64,))[0][3](np.random.default_rng(0))
  ref = pipelines.for_config(config).padding_example()
  module, _ = build_model(config)
  for k in set(module.TRAIN_KEYS) | set(module.EVAL_KEYS):
    want = np.asarray(ref[k])
    assert batch[k].dtype == want.dtype and batch[k].shape[1:] == (
        (64, 64, 3) if k == 'image' else want.shape), k


def test_known_peaks():
  from experiments import bench_peaks
  assert bench_peaks.known_peak('NVIDIA H200', 'bfloat16') == (989e3, 'NVIDIA H200 bfloat16 dense spec')
  assert bench_peaks.known_peak('NVIDIA H100 80GB HBM3', 'float32')[0] == 494e3  # TF32
  assert bench_peaks.known_peak('NVIDIA H100 PCIe', 'bfloat16')[0] == 756e3
  assert bench_peaks.known_peak('NVIDIA A100-SXM4-80GB', 'float32') == (156e3, 'NVIDIA A100-SXM4-80GB TF32 dense spec')
  assert bench_peaks.known_peak('NVIDIA L4', 'bfloat16')[0] == 121e3
  assert bench_peaks.known_peak('NVIDIA L40S', 'bfloat16') is None  # not the L4
  assert bench_peaks.known_peak('TPU v5 lite', 'bfloat16')[0] == 197e3
  assert bench_peaks.known_peak('TPU v4', 'float32') is None
  measured = []
  measure = lambda dtype: measured.append(dtype) or 10.0 * len(measured)
  gpu = type('Device', (), dict(platform='gpu', device_kind='NVIDIA H200'))
  peak = bench_peaks.Peak('bfloat16', gpu, measure)
  assert (peak.gflops, peak.measured, measured) == (989e3, False, [])
  assert not peak.remeasure() and measured == []
  cpu = type('Device', (), dict(platform='cpu', device_kind='cpu'))
  peak = bench_peaks.Peak('float32', cpu, measure)
  assert (peak.gflops, peak.source) == (10.0, 'float32 matmul measured in this run')
  assert peak.remeasure() and peak.gflops == 20.0 and measured == ['float32'] * 2


def test_gpu_rows_script_plans_the_issue_rows(tmp_path):
  """experiments/gpu_rows.sh's benchmark commands, each through benchmark.py --dry."""
  env = dict(CARD='nvidia_h200', RESULTS=str(tmp_path), DATA=str(tmp_path),
             PATH='/usr/bin:/bin')
  printed = subprocess.run(['bash', str(ROOT / 'experiments' / 'gpu_rows.sh'), '--print'],
                           env=env, capture_output=True, text=True, check=True).stdout
  commands = [shlex.split(line) for line in printed.splitlines()]
  assert all(any(a.startswith(f'--json={tmp_path}/nvidia_h200_') for a in c) for c in commands)
  planned = [bench.main(c + ['--dry']) for c in commands]
  rows = [(r['model'], r['mode'], r['size'], r['batch'], r['dtype']) for r in sum(planned[:3], [])]
  assert rows == [
      ('yolov3_darknet', 'train', 608, 64, 'bfloat16'), ('yolov3_darknet', 'infer', 608, 64, 'bfloat16'),
      ('mask_rcnn_r50_fpn_1x', 'train', '800x1344', 16, 'bfloat16'),
      ('retinanet_r50_fpn_1x', 'infer', '896x1408', 1, 'float32'),
      ('retinanet_r50_fpn_1x', 'infer', '896x1408', 8, 'float32')]
  assert [r['with_loader'] for r in sum(planned[:3], [])] == [12, 12, 12, None, None]
  assert [r['profile'] for r in planned[2]] == [True, True]
  loader = {(r['mode'], r['image_dtype'], r['num_workers']) for r in planned[3]}
  assert len(loader) == 3 * 2 * 6 and {w for *_, w in loader} == {0, 1, 2, 4, 8, 12}


def test_row_loader_config_and_cycled_eval(shapes_dir, tmp_cache):
  from experiments import bench_loader
  ssd = bench_loader.row_config(bench.load_config('ssd_mobilenet_v1_voc', {}), 'train', 300, 64,
                                8, '/nonexistent')
  assert (ssd.data.image_size, ssd.train.batch_size, ssd.data.num_workers) == (300, 64, 8)
  assert ssd.data.train_split == 'voc2007_trainval'  # no VOC2012 under /nonexistent
  config = bench.load_config('yolov3_darknet', {'data.cache_dir': str(tmp_cache),
                                                'data.max_boxes': 8})
  config = bench_loader.row_config(config, 'infer', 64, 4, 0, shapes_dir)
  assert config.eval.size == 64 and tuple(config.data.train_sizes) == (64,)
  rate = bench_loader.row_rate(config, 'infer', batches=3)  # 16 images of an 8-image split
  assert rate['img_s'] > 0 and rate['num_workers'] == 0
  seen = bench_loader.Cycled(lambda i: i, 8)
  assert [seen(i) for i in (0, 7, 8, 15)] == [0, 7, 0, 7]


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
