"""Parity of the ResNet-family backbones and the FPN neck with PaddleDetection 2.6.

ppdet's own modules (ppdet.modeling.backbones.resnet.ResNet / .senet.SENet,
ppdet.modeling.necks.fpn.FPN), built with the zoo configs' settings and random weights
(tests/parity/ppdet_resnet.py, run once for the whole module in ppdet's venv), against
detx's modules built from the same zoo configs (detx.models.backbones.build /
detx.models.necks.build) that load ppdet's state_dict through detx.weights.ppdet2 and the
models' 1.x name rules, BN statistics folded into the frozen affine norms as
model.pretrained does. Compared: every returned feature level, before any head.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx import config as cfg
from detx.models import backbones, necks
from detx.models.yolov3 import LEVELS as YOLO_LEVELS
from detx.weights import paddle as pw
from detx.weights import ppdet2
from tests.parity.env import assert_close, run_ppdet

pytestmark = [pytest.mark.slow, pytest.mark.parity]

IMAGE = (1, 3, 80, 112)  # not a multiple of 32: the vd shortcut's ceil-mode pool sees 5x7
_FROZEN_BN = dict(norm_type='bn', freeze_norm=True, freeze_at=0, return_idx=[0, 1, 2, 3])
# case: (zoo config, ppdet class, ppdet arguments as PaddleDetection 2.x's ymls set them)
BACKBONES = {
    'r50_b': ('faster_rcnn_r50_fpn_1x', 'resnet', dict(depth=50, variant='b', **_FROZEN_BN)),
    'r50_vd': ('faster_rcnn_r50_vd_fpn_2x', 'resnet', dict(depth=50, variant='d', **_FROZEN_BN)),
    'r101_b': ('faster_rcnn_r101_fpn_1x', 'resnet', dict(depth=101, variant='b', **_FROZEN_BN)),
    'r101_vd': ('faster_rcnn_r101_vd_fpn_1x', 'resnet',
                dict(depth=101, variant='d', **_FROZEN_BN)),
    # yolov3_r34_270e_coco: sync BN, trained (freeze_norm false, freeze_at -1), C3-C5.
    'r34': ('yolov3_r34', 'resnet', dict(depth=34, variant='b', norm_type='sync_bn',
                                         freeze_norm=False, freeze_at=-1, return_idx=[1, 2, 3])),
    'x101_vd_64x4d': ('faster_rcnn_x101_vd_64x4d_fpn_1x', 'resnet',
                      dict(depth=101, variant='d', groups=64, base_width=4, **_FROZEN_BN)),
    'se154_vd': ('faster_rcnn_se154_vd_fpn_s1x', 'senet',
                 dict(depth=152, variant='d', groups=64, base_width=4, std_senet=True,
                      **_FROZEN_BN)),
}

FPN_SIZES = {2: (16, 24), 3: (8, 12), 4: (4, 6), 5: (2, 3)}  # a 64x96 image's C2-C5
FPN_CHANNELS = {2: 256, 3: 512, 4: 1024, 5: 2048}
# case: (zoo config, detx neck overrides, ppdet FPN arguments)
FPNS = {
    # Faster/Mask/Cascade R-CNN FPN: P2-P5, P6 a stride-2 subsample of P5.
    'fpn_rcnn': ('faster_rcnn_r50_fpn_1x', {}, dict(
        in_channels=[256, 512, 1024, 2048], out_channel=256,
        spatial_scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32], has_extra_convs=False, extra_stage=1)),
    # RetinaNet, P3-P7: the zoo's P6 from C5 (ppdet's use_c5=True) ...
    'fpn_retina_c5': ('retinanet_r50_fpn_1x', {}, dict(
        in_channels=[512, 1024, 2048], out_channel=256, spatial_scales=[1 / 8, 1 / 16, 1 / 32],
        has_extra_convs=True, extra_stage=2, use_c5=True)),
    # ... and 2.x's retinanet_r50_fpn: P6 from P5 (use_c5=False), detx neck.extra_from='p5'.
    'fpn_retina_p5': ('retinanet_r50_fpn_1x', {'extra_from': 'p5'}, dict(
        in_channels=[512, 1024, 2048], out_channel=256, spatial_scales=[1 / 8, 1 / 16, 1 / 32],
        has_extra_convs=True, extra_stage=2, use_c5=False)),
}


def _backbone_levels(config):
  if config.model.name == 'yolov3':
    return tuple(YOLO_LEVELS)
  return necks.input_levels(config.model.neck)


@pytest.fixture(scope='module')
def ppdet(tmp_path_factory):
  """ppdet's outputs and state dicts of every case: (outdir, inputs, seconds). The state
  dicts (1.4 GB, SENet154's a third) are deleted after the module."""
  outdir = tmp_path_factory.mktemp('ppdet_resnet')
  rng = np.random.default_rng(0)
  inputs = {'image': rng.normal(0, 1, IMAGE).astype(np.float32)}
  for lvl, (h, w) in FPN_SIZES.items():
    inputs[f'c{lvl}'] = rng.normal(0, 1, (1, FPN_CHANNELS[lvl], h, w)).astype(np.float32)
  np.savez(outdir / 'inputs.npz', **inputs)
  cases = [dict(name=name, kind=kind, args=args, inputs=['image'], seed=i)
           for i, (name, (_, kind, args)) in enumerate(BACKBONES.items())]
  for i, (name, (_, _, args)) in enumerate(FPNS.items()):
    first = 2 if args['spatial_scales'][0] == 1 / 4 else 3
    cases.append(dict(name=name, kind='fpn', args=args, seed=100 + i,
                      inputs=[f'c{lvl}' for lvl in range(first, 6)]))
  start = time.time()
  run_ppdet('ppdet_resnet.py', {'cases': cases}, outdir)
  yield outdir, inputs, time.time() - start
  for path in outdir.glob('*_state.npz'):
    path.unlink()


def _load(outdir, name):
  with np.load(outdir / f'{name}_state.npz') as s, np.load(outdir / f'{name}_out.npz') as o:
    return dict(s), [o[f'out{i}'] for i in range(len(o.files))]


def _variables(module, config, state, prefix, rules, *args):
  """detx variables of `module` from ppdet's state dict, through the 2.x name map and the
  1.x rules with BN folded into affine norms (detx.weights.pretrained's path)."""
  named, unmatched = ppdet2.to_1x({f'{prefix}.{k}': v for k, v in state.items()}, config)
  assert not unmatched, f'2.x names without a rename: {unmatched[:5]}'
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  variables, report = pw.load_paddle_weights(shapes, named, rules, strict=True,
                                             fuse_norm=True)
  assert not report.unexpected, report
  return variables


@pytest.mark.parametrize('case', list(BACKBONES))
def test_backbone(ppdet, case):
  outdir, inputs, _ = ppdet
  config = cfg.load(BACKBONES[case][0])
  state, want = _load(outdir, case)
  levels = _backbone_levels(config)
  module = backbones.build(config.model.backbone, levels)
  x = jnp.asarray(inputs['image'].transpose(0, 2, 3, 1))
  variables = _variables(module, config, state, 'backbone', pw.RESNET_RULES, x)
  got = module.apply(variables, x, train=False)  # eagerly: compiling SENet154 costs more
  assert sorted(got) == list(levels) and len(want) == len(levels)
  for lvl, ref in zip(levels, want):
    assert_close(f'{case} C{lvl}', np.asarray(got[lvl]).transpose(0, 3, 1, 2), ref)


@pytest.mark.parametrize('case', list(FPNS))
def test_fpn(ppdet, case):
  outdir, inputs, _ = ppdet
  name, overrides, args = FPNS[case]
  config = cfg.load(name)
  config.model.neck.update(overrides)  # e.g. extra_from='p5'
  state, want = _load(outdir, case)
  module = necks.build(config.model.neck)
  first = config.model.neck.min_level
  feats = {lvl: jnp.asarray(inputs[f'c{lvl}'].transpose(0, 2, 3, 1)) for lvl in range(first, 6)}
  variables = _variables(module, config, state, 'neck', pw.DETECTRON_RULES, feats)
  got = module.apply(variables, feats)
  levels = list(range(first, config.model.neck.max_level + 1))
  assert sorted(got) == levels and len(want) == len(levels)
  for lvl, ref in zip(levels, want):
    assert_close(f'{case} P{lvl}', np.asarray(got[lvl]).transpose(0, 3, 1, 2), ref)
