"""detx.predict: in-process on a tiny YOLOv3 (the run's config.json, --threshold,
--json_only, batches with a padded last one), and (slow) from the command line for every
family on a directory of real COCO images (three of the five families `long`)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detx import main as detx_main, predict, train
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _copy_images(src, dst, n):
  dst.mkdir()
  for f in sorted(Path(src).iterdir())[:n]:
    (dst / f.name).write_bytes(f.read_bytes())
  return dst


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A one-step tiny YOLOv3 run whose config.json alone holds the overrides predict
  needs (the narrow model, and every candidate kept: an untrained model scores low),
  and 5 val images."""
  tmp = tmp_path_factory.mktemp('tiny_run')
  c = tiny_config(tmp, steps=1, **{'model.conf_thresh': 0.0, 'model.nms.score_threshold': 0.0,
                                   'model.nms.keep_top_k': 10})
  train.train_and_evaluate(c, str(tmp / 'run'), do_eval=False)
  return c, tmp / 'run', _copy_images(tmp / 'shapes' / 'val2017', tmp / 'in', 5)


def predict_cli(capsys, *args):
  """`python -m detx.predict ARGS` in-process: (exit code, stdout, stderr)."""
  code = predict.cli_run(['detx.predict', *map(str, args)])
  out, err = capsys.readouterr()
  return code, out, err


def assert_same_detections(a, b, atol=1e-3):
  """Equal results up to float noise (another batch size or program compiles other
  kernels): the same images, classes and order, boxes and scores within atol."""
  key = lambda rs: [(r['image_id'], r['category_id'], r['file_name']) for r in rs]
  assert key(a) == key(b)
  np.testing.assert_allclose([r['bbox'] for r in a], [r['bbox'] for r in b], atol=atol)
  np.testing.assert_allclose([r['score'] for r in a], [r['score'] for r in b], atol=atol)


def _load(out_dir):
  return json.loads((Path(out_dir) / 'detections.json').read_text())


def test_predict_writes_drawn_images_and_coco_results(tiny_run, tmp_path):
  c, workdir, images = tiny_run
  # A grayscale PNG too: predict converts it.
  images = _copy_images(images, tmp_path / 'in', 2)
  cv2.imwrite(str(images / 'gray.png'), np.full((50, 70), 128, np.uint8))
  out = tmp_path / 'out'
  results = predict.run(c, str(workdir / 'checkpoints'), str(images), str(out), threshold=0.0)
  names = sorted(p.name for p in out.iterdir())
  assert names == sorted([f.stem + '.jpg' for f in images.iterdir()] + ['detections.json'])
  assert _load(out) == json.loads(json.dumps(results))
  gray = [r for r in results if r['file_name'] == 'gray.png']
  assert gray and all(0 <= r['bbox'][0] <= 70 and r['bbox'][2] > 0 for r in gray)
  cats = {r['category_id'] for r in results}
  assert cats <= {cat['id'] for cat in json.loads((workdir / 'categories.json').read_text())}
  drawn = cv2.imread(str(out / 'gray.jpg'))
  assert drawn.shape == (50, 70, 3)


def test_predict_reads_the_runs_config_json(tiny_run, tmp_path, capsys):
  """The narrow model and the zero score thresholds were given at training time only:
  predict takes them from the workdir's config.json (the plain quickstart file would
  not fit the checkpoint); an override given now wins over it."""
  _, workdir, images = tiny_run
  code, out, err = predict_cli(capsys, '--config=configs/quickstart.py', f'--checkpoint={workdir}',
                               f'--input={images}', f'--output={tmp_path / "a"}', '--threshold=0')
  assert code == 0, err
  assert f'config: {workdir / "config.json"} (the run\'s)' in out
  results = _load(tmp_path / 'a')
  per_image = [sum(r['file_name'] == f.name for r in results) for f in sorted(images.iterdir())]
  assert per_image == [10] * 5  # model.nms.keep_top_k=10 from config.json, the file's 100
  # detx.main --mode=predict reads it too
  code = detx_main.run(['detx.main', '--config=configs/quickstart.py', f'--workdir={workdir}',
                        '--mode=predict', f'--input={images}', '--config.model.nms.keep_top_k=2'])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert f'predict: config: {workdir / "config.json"} (the run\'s)' in out
  assert 'overrides model.nms.keep_top_k 100 -> 2' in out  # as the file's 100 read it
  counts = [sum(r['file_name'] == f.name for r in _load(workdir / 'predictions'))
            for f in images.iterdir()]
  assert max(counts) <= 2
  # the file's width would not fit the checkpoint: one line naming the arrays
  code, _, err = predict_cli(capsys, f'--checkpoint={workdir}', f'--input={images}',
                             f'--output={tmp_path / "w"}', '--config.model.backbone.width=0.25')
  assert code == 2 and 'holds another model' in err and 'Traceback' not in err
  # without --config: the run's config alone; a command-line override wins
  code, out, err = predict_cli(capsys, f'--checkpoint={workdir}', f'--input={images}',
                               f'--output={tmp_path / "b"}', '--threshold=0',
                               '--config.model.nms.keep_top_k=3')
  assert code == 0, err
  assert 'overrides model.nms.keep_top_k 10 -> 3' in out
  results_b = _load(tmp_path / 'b')
  assert [sum(r['file_name'] == f.name for r in results_b) for f in images.iterdir()] == [3] * 5
  # a checkpoint without config.json and no --config: one line
  bare = tmp_path / 'bare'
  shutil.copytree(workdir / 'checkpoints', bare / 'checkpoints')
  code, _, err = predict_cli(capsys, f'--checkpoint={bare}', f'--input={images}',
                             f'--output={tmp_path / "c"}')
  assert code == 2 and 'has no config.json: give --config' in err and 'Traceback' not in err


def test_predict_without_checkpoint_from_model_pretrained(tiny_run, tmp_path, capsys):
  """No --checkpoint: --config.model.pretrained fills --config's model (here from the
  tiny run itself): the checkpoint's detections, classes numbered 1..C. Without either,
  or without --config, one line. (A PaddleDetection .pdparams: tests/parity.)"""
  _, workdir, images = tiny_run
  config = f'--config={Path(predict.__file__).parent / "run_config.py"}:{workdir / "config.json"}'
  common = (f'--input={images}', '--threshold=0')
  code, _, err = predict_cli(capsys, f'--checkpoint={workdir}', *common,
                             f'--output={tmp_path / "ckpt"}', '--json_only')
  assert code == 0, err
  code, out, err = predict_cli(capsys, config, f'--config.model.pretrained={workdir}', *common,
                               f'--output={tmp_path / "pre"}', '--json_only')
  assert code == 0, err
  assert 'model.pretrained=' in out and '(no checkpoint)' in out and 'loaded' in out
  by_id = {c['id']: i + 1 for i, c in
           enumerate(json.loads((workdir / 'categories.json').read_text()))}
  want = [dict(r, category_id=by_id[r['category_id']]) for r in _load(tmp_path / 'ckpt')]
  assert_same_detections(_load(tmp_path / 'pre'), want)
  for args, line in (((config,), '--config.model.pretrained=WEIGHTS) is required'),
                     ((f'--config.model.pretrained={workdir}',), 'needs --config=')):
    code, _, err = predict_cli(capsys, *args, *common, f'--output={tmp_path / "x"}')
    assert code == 2 and line in err and 'Traceback' not in err, err


def test_predict_threshold_json_only_and_batches(tiny_run, tmp_path, capsys):
  """--threshold keeps exactly the detections scoring >= it; --json_only writes no
  image; batches of 2 (the last one padded) give the detections of one batch of 8."""
  _, workdir, images = tiny_run
  common = (f'--checkpoint={workdir}', f'--input={images}')
  assert predict_cli(capsys, *common, f'--output={tmp_path / "all"}', '--threshold=0',
                     '--batch_size=2')[0] == 0
  everything = _load(tmp_path / 'all')
  assert predict_cli(capsys, *common, f'--output={tmp_path / "one"}', '--threshold=0',
                     '--batch_size=8')[0] == 0
  assert_same_detections(_load(tmp_path / 'one'), everything)
  cut = float(np.median([r['score'] for r in everything]))
  code, out, err = predict_cli(capsys, *common, f'--output={tmp_path / "cut"}',
                               f'--threshold={cut}', '--batch_size=2')
  assert code == 0, err
  assert 'in batches of 2' in out
  kept = _load(tmp_path / 'cut')
  assert kept == [r for r in everything if r['score'] >= cut]
  assert 0 < len(kept) < len(everything)
  assert sorted(p.name for p in (tmp_path / 'cut').glob('*.jpg')) == sorted(
      f.stem + '.jpg' for f in images.iterdir())
  code, out, err = predict_cli(capsys, *common, f'--output={tmp_path / "json"}', '--json_only',
                               '--batch_size=2')
  assert code == 0, err
  assert [p.name for p in (tmp_path / 'json').iterdir()] == ['detections.json']
  assert _load(tmp_path / 'json') == everything  # --json_only keeps every detection


# The five families, each trained one step at a tiny size (python -m detx.main
# --mode=train with the overrides), then python -m detx.predict without them: it reads
# the run's config.json.
FAST_XLA = ('--xla_backend_optimization_level=0', '--xla_llvm_disable_expensive_passes=true')
# In CI: a one-stage family and the two-stage one with masks (~50 s each on CI); the
# other three are marked `long` (DETX_LONG_TESTS=1) for CI's hour.
CLI_CONFIGS = ('yolov3_darknet', 'mask_rcnn_r50_fpn_1x',
               *(pytest.param(n, marks=pytest.mark.long) for n in
                 ('faster_rcnn_r50_fpn_1x', 'cascade_rcnn_r50_fpn_1x', 'retinanet_r50_fpn_1x')))
_SMALL_RPN = {f'model.rpn.{mode}_{k}': n for mode in ('train', 'test')
              for k, n in (('pre_nms_top_n', 128), ('post_nms_top_n', 32),
                           ('collect_top_n', 32))}


def _overrides(name, data_dir, cache_dir) -> dict:
  o = {'data.dir': str(data_dir), 'data.cache_dir': str(cache_dir), 'data.max_size': 64,
       'data.train_limit': 2, 'train.batch_size': 2, 'data.num_workers': 0,
       'train.steps': 1, 'train.log_every': 1, 'model.pretrained': '',
       # A random-init ResNet with the zoo's frozen affine norms has huge activations: a
       # full-size step would leave only background. A small clipped one keeps the step
       # near init, and every candidate is kept, so boxes (and masks) are drawn and written.
       'optim.base_lr': 1e-4, 'optim.clip_norm': 1.0, 'model.nms.score_threshold': 0.0}
  if 'rcnn' in name:
    o.update(_SMALL_RPN)
    o['model.roi.batch_size_per_im'] = 16
  if name.startswith('yolov3'):
    o['model.conf_thresh'] = 0.0
  return o


@pytest.fixture(scope='module')
def val_images(coco_tiny_dir, tmp_path_factory):
  """A directory of 3 coco_tiny val images with objects (each file name is its COCO
  image id), and the val annotations."""
  from detx.evaluation.coco import load_coco
  coco = load_coco(coco_tiny_dir / 'annotations/instances_val2017.json')
  ids = sorted(i for i in coco.getImgIds() if coco.getAnnIds(imgIds=[i]))[:3]
  out = tmp_path_factory.mktemp('val_images')
  for i in ids:
    name = coco.imgs[i]['file_name']
    (out / name).write_bytes((coco_tiny_dir / 'val2017' / name).read_bytes())
  return coco, out


def _run(module, name, args, overrides):
  """`python -m <module> --config=configs/<name>.py ARGS --config.k=v ...`, compiled with
  XLA's cheap CPU settings (compile time is most of a one-image run) into the tests'
  shared compilation cache (conftest), not ~/.cache."""
  env = dict(os.environ, XLA_FLAGS=' '.join([os.environ.get('XLA_FLAGS', ''), *FAST_XLA]))
  cmd = [sys.executable, '-m', module, f'--config=configs/{name}.py', *args,
         f'--config.compile_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}']
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
@pytest.mark.parametrize('name', CLI_CONFIGS)
def test_predict_command_line_every_family(name, coco_tiny_dir, tmp_cache, val_images,
                                           tmp_path_factory):
  """`python -m detx.predict` on a directory of 3 images (one batch of 4, the last row
  padding) from a one-step checkpoint (`python -m detx.main --mode=train`), its config
  from the run's config.json: drawn images and a json that pycocotools' loadRes accepts;
  Mask R-CNN draws masks and writes them as RLE."""
  coco, images = val_images
  tmp = tmp_path_factory.mktemp(name)
  _run('detx.main', name, [f'--workdir={tmp / "run"}', '--mode=train'],
       _overrides(name, coco_tiny_dir, tmp_cache))
  out = tmp / 'out'
  _run('detx.predict', name, [f'--checkpoint={tmp / "run"}', f'--input={images}',
                              f'--output={out}', '--threshold=0.0', '--batch_size=4'], {})

  files = sorted(images.iterdir())
  for image in files:
    drawn = cv2.imread(str(out / f'{image.stem}.jpg')).astype(int)
    original = cv2.imread(str(image))
    assert drawn.shape == original.shape
  assert np.abs(drawn - original).max() > 100  # boxes were drawn on it
  results = json.loads((out / 'detections.json').read_text())
  assert results and {r['image_id'] for r in results} == {int(f.stem) for f in files}
  res = coco.loadRes(str(out / 'detections.json'))
  assert len(res.getAnnIds()) == len(results)
  assert {r['category_id'] for r in results} <= set(coco.getCatIds())
  if name.startswith('mask_rcnn'):
    assert all(isinstance(r['segmentation']['counts'], str) for r in results)
    image_id = int(files[-1].stem)
    masks = np.stack([res.annToMask(a) for a in res.loadAnns(res.getAnnIds(imgIds=[image_id]))])
    assert masks.shape[1:] == original.shape[:2]
    union = masks.any(0)
    assert union.sum() > 100
    # blended in the class colours: the pixels under the masks changed
    assert np.abs(drawn - original)[union].mean() > 20, np.abs(drawn - original)[union].mean()
  else:
    assert not any('segmentation' in r for r in results)
