"""Slow tier: the R50 R-CNNs (faster_rcnn_r50_fpn_1x, faster_rcnn_r50_1x (C4),
cascade_rcnn_r50_fpn_1x, mask_rcnn_r50_fpn_1x: their models as configured) and
retinanet_r50_fpn_1x fit 8 real COCO images.

No ImageNet weights can be fetched here, and a random-init ResNet50 does not train with
the zoo's frozen affine norms. So, shared by the tests (module fixture):
  phase 1  Faster R-CNN R50-FPN, every stage trained, BatchNorm on batch statistics,
           gradient clipping, 300 steps of 4 images at a short side of 96;
then a test (C4, Cascade, Mask, RetinaNet; Faster R-CNN R50-FPN is phase 1's config,
and Mask R-CNN's bbox floor is its fit: see that test) runs
  phase 2  its config from phase 1 (model.pretrained; new heads start from init) with
           those norms frozen at their running statistics, 60 steps (C4: 300, RetinaNet:
           RETINA_STEPS at a short side of 77), so the
           model adapts to the statistics evaluation uses (straight after phase 1, with
           batch statistics of 4 images, AP50 was 0.44 on the same images). C4 loads
           phase 1 by Paddle name (see its test).
In CI phase 1 and the Mask R-CNN and RetinaNet phase 2s run: the C4 and Cascade phase 2s
are marked `long` (~8.5 and ~5.5 min on CI) and run with DETX_LONG_TESTS=1 and in
`python experiments/fits.py overfit`.
Phase 2 images at a short side of 128 (data.max_size 213), phase 1's at 96 (160: ~8 min
at 128, ~5.5 at 96); 64 RoIs sampled per image (C4: 8), so 16 foreground slots, each run
through the Mask head's four convs. Phase 2 figures: experiments/results/overfit_cpu.json.
With phase 1 at 128 (that record before this change), phase 2 read AP50 0.91 (C4),
1.0 (Cascade), Mask R-CNN bbox 0.95 and segm 0.88-0.89.
The issue asks ~320, about five times the compute (over an hour and a half here for the
four): DETX_RCNN_FIT_MAX_SIZE=533 DETX_RCNN_FIT_PHASE1_MAX_SIZE=533, not in CI. Measured
there (phase 1 at 533 too, before it had its own size): Faster FPN AP50 1.0 (AP
0.88), Cascade 1.0 (AP 0.85), Mask R-CNN bbox 0.95 / segm 0.95, C4 0.90 (AP 0.71;
0.92 with 16 RoIs) (phase 1 35 min, phase 2 11, 14, 14 and 13).
"""
import json
import os
from pathlib import Path

import pytest

from detx import checkpoint
from detx import config as cfg
from detx import train
from tests.test_overfit import OVERFIT_IMAGE_IDS, coco_subset

# 800/1333 -> 128/213; anchors and the FPN canonical size follow.
MAX_SIZE = int(os.environ.get('DETX_RCNN_FIT_MAX_SIZE', '213'))
# Phase 1 at a short side of 96 (160 / 213 of the compute): 473 s instead of 734 s on CI's
# CPU, and Mask R-CNN's phase 2 (at MAX_SIZE) read bbox / segm AP50 0.97 / 0.82 from it.
PHASE1_MAX_SIZE = int(os.environ.get('DETX_RCNN_FIT_PHASE1_MAX_SIZE', '160'))
PHASE1 = os.environ.get('DETX_RCNN_FIT_PHASE1', '')
# RetinaNet at data.max_size 128 (one 128x128 bucket: the head's convs on P3-P7, ~3/4 of a
# step, on ~0.6 of the positions) with the anchors scaled as the image (0.6 = 128 / 213),
# so the objects (16-115 px here) keep the levels and anchors they had at 213 with the
# zoo's sizes; at anchor_scale 1 the bottle (16x24 px, the only medium object) was never
# found (APm 0) and 400 steps read 0.69. Measured from phase 1 at 96, eval every 100 steps: with decays at 267 / 356, AP50
# 0.30 / 0.42 / 0.84 / 0.87 (400 steps, 447 s); 300 steps with decays at 220 / 265, 0.73.
# The lr's decay does most of it: ~270 steps at lr 0.01 come first. At data.max_size 213
# with zoo anchors: 400 steps 0.91 (890 s), 300 steps 0.62, 200 steps 0.57 (lr 0.02: 0.20;
# batch 2: 0.18); RMSProp, lr 2e-4, 160 steps: 0.18.
RETINA_STEPS, RETINA_MILESTONES = 300, (267, 290)
RETINA_MAX_SIZE, RETINA_ANCHOR_SCALE = 128, 0.6  # DETX_RCNN_FIT_MAX_SIZE leaves these


def _config(name, data, cache, steps, max_size=MAX_SIZE, **overrides):
  c = cfg.load(name)
  c.model.pretrained = ''  # random init (phase 2 sets its own): no ImageNet download
  c.data.dir = str(data)
  c.data.cache_dir = str(cache)
  c.eval.split = 'train'  # evaluated on the images it trained on
  c.data.augment = 'none'
  c.data.num_workers = 0
  c.data.max_size = max_size
  c.model.backbone.update(norm='bn', freeze_norm=False, freeze_at=0)
  if 'roi' in c.model:  # RetinaNet samples no RoIs
    c.model.roi.batch_size_per_im = 64   # 16 foreground slots: the Mask head's convs run on each
  c.train.batch_size = 4
  c.train.steps = steps
  c.train.log_every = 50
  c.train.checkpoint_every = 100000
  c.eval.batch_size = 8
  c.optim.base_lr = 0.01
  c.optim.clip_norm = 10.0
  c.optim.schedule.warmup_steps = 30
  return cfg.override(c, overrides)


def _same_phase1(config, workdir: Path):
  """Fails unless WORKDIR ran `config` (data and cache paths aside) to its last step."""
  stored = json.loads((workdir / 'config.json').read_text())
  ours = json.loads(config.to_json_best_effort())
  keys = ('model', 'train', 'optim', 'data')
  for d in (stored, ours):
    d['data'] = {k: v for k, v in d['data'].items() if k not in ('dir', 'cache_dir')}
  if [stored[k] for k in keys] != [ours[k] for k in keys]:
    pytest.fail(f'DETX_RCNN_FIT_PHASE1={workdir} did not run this file\'s phase 1 config')
  step_dir = checkpoint.latest_step_dir(workdir)
  if step_dir is None or int(step_dir.name) != config.train.steps:
    pytest.fail(f'DETX_RCNN_FIT_PHASE1={workdir} has no step-{config.train.steps} checkpoint')


@pytest.fixture(scope='module')
def phase1(coco_tiny_dir, tmp_path_factory):
  """DETX_RCNN_FIT_PHASE1=WORKDIR: a phase 1 finished earlier with this config (checked)
  is used instead of training one (to rerun phase-2 tests; CI trains its own)."""
  root = tmp_path_factory.mktemp('rcnn_overfit')
  data = coco_subset(coco_tiny_dir, root / 'coco8', OVERFIT_IMAGE_IDS)
  c = _config('faster_rcnn_r50_fpn_1x', data, root / 'tfds', 300, max_size=PHASE1_MAX_SIZE)
  if PHASE1:
    _same_phase1(c, Path(PHASE1))
    os.symlink(Path(PHASE1).resolve(), root / 'phase1')
  else:
    train.train_and_evaluate(c, str(root / 'phase1'), do_eval=False)
  return data, root


def _phase2(name, phase1, tmp_path):
  data, root = phase1
  # 60 steps (lr x0.1 at 40 and 53), after a phase 1 of this file's config: Cascade AP50
  # 1.0, Mask R-CNN bbox 0.99 / segm 0.95 (100 steps read 0.96 and 1.0 / 0.89 in
  # experiments/results/overfit_cpu.json).
  c = _config(name, data, root / 'tfds', 60, **{
      'model.backbone.freeze_norm': True, 'model.pretrained': str(root / 'phase1'),
      'optim.base_lr': 0.005, 'optim.schedule.warmup_steps': 0})
  return train.train_and_evaluate(c, str(tmp_path / name))


@pytest.mark.slow
@pytest.mark.long  # ~8.5 min on CI (f4eb560): DETX_LONG_TESTS=1 or experiments/fits.py overfit
def test_faster_rcnn_r50_c4_overfits_8_coco_images(phase1, tmp_path):
  """faster_rcnn_r50_1x from phase 1, saved as Paddle parameter files and loaded through
  model.pretrained by Paddle name, as a zoo user loads ImageNet weights: the backbone's
  res5 becomes the RoI head's res5; the 1024-channel RPN and the outputs start from init.
  The backbone stays frozen through res4 (freeze_at 4) and 8 RoIs are sampled per image,
  half of them foreground: res5 on every RoI is most of a step. From the same phase 1:
  8 RoIs (fg 0.5), 300 steps: AP50 0.91 in 430 s; 16 (fg 0.25), 300 steps: 0.84 in 763 s;
  16, 200 steps: 0.71; 8, 200 steps: 0.72, too near the floor for CI.

  Proposals: 128 kept after NMS, in training and at test, not the zoo's 2000 / 1000. At
  128x213 the C4 RPN has ~1.7k anchors (~63k at 800x1333), so 1000 proposals keep nearly
  every box NMS leaves, many of them small boxes on parts of an object. The head, shown
  a few RoIs per image, seldom sees those in training, and they outscore the whole-object
  proposal at test: an 800-step run read AP50 0.66 with 1000 test proposals and 0.92
  with 128 on the same weights."""
  from detx import checkpoint
  from detx.models.base import build_model
  from detx.weights import paddle as pw
  data, root = phase1
  fpn = _config('faster_rcnn_r50_fpn_1x', data, root / 'tfds', 1)
  variables = checkpoint.restore_variables(str(root / 'phase1'))
  variables = {k: variables[k] for k in ('params', 'batch_stats')}
  pw.save_paddle_weights(variables, tmp_path / 'phase1_paddle', build_model(fpn)[1].paddle)
  c = _config('faster_rcnn_r50_1x', data, root / 'tfds', 300, **{
      'model.backbone.freeze_norm': True, 'model.backbone.freeze_at': 4,
      'model.pretrained': str(tmp_path / 'phase1_paddle'), 'model.roi.batch_size_per_im': 8,
      'model.roi.fg_fraction': 0.5,
      'model.rpn.train_post_nms_top_n': 128, 'model.rpn.test_post_nms_top_n': 128,
      'optim.schedule.warmup_steps': 0})
  result = train.train_and_evaluate(c, str(tmp_path / 'faster_rcnn_r50_1x'))
  assert result['bbox/AP50'] >= 0.7, result  # measured 0.91 (~430 s here)


@pytest.mark.slow
@pytest.mark.long  # ~5.5 min on CI (f4eb560): DETX_LONG_TESTS=1 or experiments/fits.py overfit
def test_cascade_rcnn_r50_fpn_overfits_8_coco_images(phase1, tmp_path):
  # Stage 1's class-agnostic bbox_pred and stages 2-3 start from init.
  result = _phase2('cascade_rcnn_r50_fpn_1x', phase1, tmp_path)
  assert result['bbox/AP50'] >= 0.7, result  # measured 0.86-1.0


@pytest.mark.slow
def test_mask_rcnn_r50_fpn_overfits_8_coco_images(phase1, tmp_path):
  # The mask head starts from init; its 4 convs run on every fg slot (16 per image here).
  # mask_rcnn_r50_fpn_1x is faster_rcnn_r50_fpn_1x's config (backbone, FPN, RPN, bbox
  # head) plus the mask branch, and MaskRCNN inherits the whole box path from RCNN: the
  # bbox floor here is also faster_rcnn_r50_fpn_1x's fit (phase 1 trains that config
  # itself), so it has no phase 2 of its own (measured alone: AP50 0.92, 261 s).
  result = _phase2('mask_rcnn_r50_fpn_1x', phase1, tmp_path)
  assert result['bbox/AP50'] >= 0.7, result  # measured 0.95
  assert result['segm/AP50'] >= 0.6, result  # measured 0.89


@pytest.mark.slow
def test_retinanet_r50_fpn_overfits_8_coco_images(phase1, tmp_path, monkeypatch):
  """retinanet_r50_fpn_1x from phase 1 (model.pretrained, matched by variable path): the
  whole ResNet50 (weights and BatchNorm statistics) and the FPN convs both models have
  (fpn_inner_res5_sum, the res3 / res4 laterals, fpn_res3-5_sum) load; P6 / P7 (fpn_6,
  fpn_7 on C5) and the RetinaHead (class and box towers, outputs) start from init.
  Backbone frozen through res4 (res5 trains: P6 / P7 read C5), norms at their running
  statistics.

  Images at data.max_size 128 (RETINA_MAX_SIZE), anchors x0.6 (19-488 px on P3-P7), not
  scaled with the image as build() would (x0.096 here): scaled so, the objects (16-115 px)
  fall to P5-P7, 4x4, 2x2 and 1x1 cells, and at 213 (x0.16) 100 steps read AP50 0.15."""
  from detx.weights import pretrained
  data, root = phase1
  seen = {}
  real = pretrained._from_checkpoint

  def spy(variables, path):
    new, loaded, missing, mismatched = real(variables, path)
    seen.update(loaded=loaded, missing=missing, mismatched=mismatched)
    return new, loaded, missing, mismatched

  monkeypatch.setattr(pretrained, '_from_checkpoint', spy)
  c = _config('retinanet_r50_fpn_1x', data, root / 'tfds', RETINA_STEPS, RETINA_MAX_SIZE, **{
      'model.backbone.freeze_norm': True, 'model.backbone.freeze_at': 4,
      'model.pretrained': str(root / 'phase1'), 'model.anchor_scale': RETINA_ANCHOR_SCALE,
      'optim.base_lr': 0.01, 'optim.schedule.warmup_steps': 10,
      'optim.schedule.milestones': RETINA_MILESTONES})
  result = train.train_and_evaluate(c, str(tmp_path / 'retinanet_r50_fpn_1x'))
  assert not seen['mismatched'], seen['mismatched']
  new_neck = {k.split('/')[2] for k in seen['missing'] if k.split('/')[1] == 'neck'}
  assert new_neck == {'fpn_6', 'fpn_7'}, new_neck
  assert {k.split('/')[1] for k in seen['missing']} == {'neck', 'head'}, seen['missing']
  assert {k.split('/')[1] for k in seen['loaded']} == {'backbone', 'neck'}
  assert result['bbox/AP50'] >= 0.7, result  # measured: see RETINA_STEPS
