"""Parity of the R-CNN heads (RPN, FPN and C4 box heads, the three Cascade stages, the
mask head) and the RetinaNet head with PaddleDetection 2.6.

ppdet's own modules (RPNHead, BBoxHead with TwoFCHead / Res5Head, CascadeHead, MaskHead
with MaskFeat, RetinaHead with RetinaFeat), built with its 2.x configs' arguments and
random weights (tests/parity/ppdet_rcnn.py, run once for the whole module in ppdet's venv),
against detx's models built from the zoo configs with the 2.x switches
(model.roi.aligned=True, sampling_ratio=0, pixel_offset=False), their weights loaded from
ppdet's paddle.save'd state dict by model.pretrained's own loader
(detx.weights.pretrained.load: detx.weights.ppdet2 names and transforms, the 1.x rules,
BN folded into the C4 head's affine norms). Both sides see the same feature maps and the
same RoIs (no proposals, no NMS); compared: RoIAlign features, raw logits and deltas.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx import config as cfg
from detx.models import base
from detx.models.heads import roi_heads
from detx.ops.boxes import DEFAULT_SCALE_CLIP
from detx.weights import pdparams, ppdet2, pretrained
from tests.parity.env import assert_close, run_ppdet

pytestmark = [pytest.mark.slow, pytest.mark.parity]

SIZE = 256  # input pixels: P2 64x64 ... P7 2x2, C4 16x16
# RoIs in input pixels, one image: levels 2, 3, 4, 5 by area; [30, 40, 141, 152]
# (111 x 112) is level 3 without the +1 pixel (2.x) and 4 with it (the zoo).
ROIS = np.array([[10.3, 12.7, 40.1, 38.9], [50.5, 60.2, 130.8, 150.4], [20.0, 30.6, 200.2, 190.1],
                 [5.1, 5.9, 250.4, 249.7], [100.2, 20.3, 118.6, 44.4], [60.7, 120.1, 180.3, 240.9],
                 [30.0, 40.0, 141.0, 152.0]], np.float32)
SWITCHES_2X = dict(aligned=True, sampling_ratio=0, pixel_offset=False)
CASES = {  # case: zoo config
    'rpn_fpn': 'faster_rcnn_r50_fpn_1x', 'rpn_c4': 'faster_rcnn_r50_1x',
    'box_fpn': 'faster_rcnn_r50_fpn_1x', 'box_c4': 'faster_rcnn_r50_1x',
    'cascade': 'cascade_rcnn_r50_fpn_1x', 'mask': 'mask_rcnn_r50_fpn_1x',
    'retina': 'retinanet_r50_fpn_1x'}


@pytest.fixture(scope='module')
def ppdet(tmp_path_factory):
  """(outdir, inputs): ppdet's .pdparams and outputs of every case."""
  outdir = tmp_path_factory.mktemp('ppdet_rcnn')
  rng = np.random.default_rng(0)
  inputs = {f'p{l}': rng.normal(0, 1, (1, SIZE >> l, SIZE >> l, 256)).astype(np.float32)
            for l in range(2, 8)}
  inputs['c4'] = rng.normal(0, 1, (1, SIZE // 16, SIZE // 16, 1024)).astype(np.float32)
  inputs.update(rois=ROIS, rois_num=np.array([len(ROIS)], np.int32),
                image_hw=np.array([SIZE - 16, SIZE - 8], np.float32))  # refined RoIs' clip
  np.savez(outdir / 'inputs.npz', **inputs)
  start = time.time()
  run_ppdet('ppdet_rcnn.py', {'seed': 0, 'cases': list(CASES)}, outdir)
  print(f'ppdet side: {time.time() - start:.1f} s')
  return outdir, inputs


def _model(case, outdir, **roi):
  """(module, variables loaded from ppdet's <case>.pdparams) of the zoo config."""
  c = cfg.load(CASES[case])
  c.model.pretrained = ''
  if 'score_rois' in roi:
    c.model.cascade.score_rois = roi.pop('score_rois')
  if 'roi' in c.model:
    c.model.roi.update(roi)
  assert base.anchor_scale(c) == 1.0
  module, rules = base.build_model(c)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                              jnp.zeros((1, 64, 64, 3)),
                                              method=type(module).init_params))
  variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  path = outdir / f'{case}.pdparams'
  _, unmatched = ppdet2.to_1x(pdparams.load_pdparams(path), c)
  assert not unmatched, f'2.x names without a detx counterpart: {unmatched}'
  variables, _ = pretrained.load(variables, path, rules.paddle, c)
  return module, variables


def _nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def _feats(inputs, levels):
  return {l: jnp.asarray(inputs[f'p{l}']) for l in levels}


def _out(outdir, case):
  return dict(np.load(outdir / f'{case}_out.npz'))


def _report(case, diffs):
  print(f'{case}: ' + ', '.join(f'{k} {v:.2g}' for k, v in diffs.items()))


def test_rpn_fpn(ppdet):
  outdir, inputs = ppdet
  module, v = _model('rpn_fpn', outdir, **SWITCHES_2X)
  outs = module.apply(v, _feats(inputs, range(2, 7)),
                      method=lambda m, f: m.rpn([x for x, _, _ in m.rpn_layout(f)]))
  want, diffs = _out(outdir, 'rpn_fpn'), {}
  for i, (logits, deltas) in enumerate(outs):
    diffs[f'P{i + 2} objectness'] = assert_close(f'P{i + 2} objectness', logits,
                                                 _nhwc(want[f'score{i}']))
    diffs[f'P{i + 2} deltas'] = assert_close(f'P{i + 2} deltas', deltas, _nhwc(want[f'delta{i}']))
  _report('rpn_fpn', diffs)


def test_rpn_c4(ppdet):
  """15 anchors: ppdet's size-first channels, permuted by the rename to detx's order."""
  outdir, inputs = ppdet
  module, v = _model('rpn_c4', outdir, **SWITCHES_2X)
  (logits, deltas), = module.apply(v, {4: jnp.asarray(inputs['c4'])},
                                   method=lambda m, f: m.rpn([x for x, _, _ in m.rpn_layout(f)]))
  want = _out(outdir, 'rpn_c4')
  perm = np.array([s * 3 + r for r in range(3) for s in range(5)])  # detx a = r * 5 + s
  d4 = (perm[:, None] * 4 + np.arange(4)).reshape(-1)
  _report('rpn_c4', {
      'objectness': assert_close('objectness', logits, _nhwc(want['score0'])[..., perm]),
      'deltas': assert_close('deltas', deltas, _nhwc(want['delta0'])[..., d4])})


def _box_case(case, inputs, outdir, levels, **roi):
  module, v = _model(case, outdir, **roi)
  feats = ({4: jnp.asarray(inputs['c4'])} if levels is None else _feats(inputs, levels))
  rois = jnp.asarray(ROIS)[None]
  res = module.cfg.roi.resolution

  def run(m, f, r):
    return m.pool(f, r, res), m.box_head(m.bbox_head, f, r)[:2]

  return module.apply(v, feats, rois, method=run)


@pytest.mark.parametrize('case', ['box_fpn', 'box_c4'])
def test_box_head(ppdet, case):
  """Class probabilities (ppdet: background last) and class-specific deltas (ppdet: no
  background slot) against detx's background-first outputs."""
  outdir, inputs = ppdet
  levels = range(2, 6) if case == 'box_fpn' else None
  pooled, (cls, box) = _box_case(case, inputs, outdir, levels, **SWITCHES_2X)
  want = _out(outdir, case)
  probs = np.asarray(jax.nn.softmax(cls[0], axis=-1))
  diffs = {'RoIAlign': assert_close('RoIAlign', pooled, _nhwc(want['pooled'])),
           'probs': assert_close('probs', np.concatenate([probs[:, 1:], probs[:, :1]], -1),
                                 want['probs']),
           'deltas': assert_close('deltas', box[0, :, 4:], want['deltas'])}
  # 2.x decoding (RCNNBox's delta2bbox), as detect decodes with model.roi.pixel_offset=False
  boxes = roi_heads.decode_class_boxes(jnp.asarray(ROIS), box[0], (0.1, 0.1, 0.2, 0.2), 81,
                                       False, DEFAULT_SCALE_CLIP, pixel_offset=False)
  diffs['boxes'] = assert_close('decoded boxes', boxes[:, 1:], want['boxes'])
  assert not np.any(box[0, :, :4]), 'the background slot holds zeros'
  _report(case, diffs)
  if case == 'box_fpn':  # the zoo's 1.x RoIAlign (aligned False, sampling 2, +1 pixel) differs
    zoo, _ = _box_case(case, inputs, outdir, levels)
    with pytest.raises(AssertionError):
      assert_close('zoo RoIAlign', zoo, _nhwc(want['pooled']), rel=1e-2)


def test_cascade_stages(ppdet):
  """Each stage's head on the same RoIs: class logits and class-agnostic deltas; then
  the whole cascade (model.cascade.score_rois='own'): the RoIs refined twice (decoded
  without the +1 pixel, clipped to the image), the stage-averaged class probabilities and
  the last stage's deltas."""
  outdir, inputs = ppdet
  module, v = _model('cascade', outdir, **SWITCHES_2X)
  outs = module.apply(v, _feats(inputs, range(2, 6)), jnp.asarray(ROIS)[None],
                      method=lambda m, f, r: [m.box_head(h, f, r)[:2] for h in m.stage_heads()])
  want, diffs = _out(outdir, 'cascade'), {}
  for i, (cls, box) in enumerate(outs):
    cls, box = np.asarray(cls[0]), np.asarray(box[0])
    diffs[f'stage {i + 1} logits'] = assert_close(
        f'stage {i + 1} logits', np.concatenate([cls[:, 1:], cls[:, :1]], -1), want[f'score{i}'])
    diffs[f'stage {i + 1} deltas'] = assert_close(f'stage {i + 1} deltas', box[:, 4:],
                                                  want[f'delta{i}'])
  module, v = _model('cascade', outdir, score_rois='own', **SWITCHES_2X)
  probs, box, rois = module.apply(v, _feats(inputs, range(2, 6)), jnp.asarray(ROIS)[None],
                                  jnp.asarray(inputs['image_hw'])[None],
                                  method=lambda m, *a: m.stage_outputs(*a))
  probs = np.asarray(probs[0])
  diffs['refined RoIs'] = assert_close('refined RoIs', rois[0], want['refined_rois'])
  assert np.asarray(rois[0])[:, 2:].max() <= SIZE - 8  # clipped: ROIS reach 250.4
  diffs['probs'] = assert_close('probs', np.concatenate([probs[:, 1:], probs[:, :1]], -1),
                                want['final_probs'])
  diffs['deltas'] = assert_close('deltas', box[0, :, 4:], want['final_deltas'])
  _report('cascade', diffs)


def test_mask_head(ppdet):
  """MaskFeat (4 convs, deconv) and mask_fcn_logits on 14x14 RoIAlign features; ppdet has
  80 class channels, detx 81 (background first)."""
  outdir, inputs = ppdet
  module, v = _model('mask', outdir, **SWITCHES_2X)
  logits = module.apply(v, _feats(inputs, range(2, 6)), jnp.asarray(ROIS)[None],
                        method=lambda m, f, r: m.mask_head(m.pool_masks(f, r)))
  _report('mask', {'logits': assert_close('mask logits', logits[..., 1:],
                                          _nhwc(_out(outdir, 'mask')['logits']))})


def test_retina_head(ppdet):
  """Class logits and deltas per level. 2.x orders the 9 anchors size-first with ratios
  (0.5, 1, 2), detx ratio-first with (1, 2, 0.5): the rename permutes the output channels,
  and ppdet's anchors, taken in that permutation, have detx's anchors' shapes."""
  outdir, inputs = ppdet
  module, v = _model('retina', outdir)
  feats = _feats(inputs, range(3, 8))
  outs = module.apply(v, feats, method=lambda m, f: m.head([f[l] for l in m.levels]))
  want, diffs = _out(outdir, 'retina'), {}
  perm = np.array([s * 3 + r for r in (1, 2, 0) for s in range(3)])
  cls_idx = (perm[:, None] * 80 + np.arange(80)).reshape(-1)
  box_idx = (perm[:, None] * 4 + np.arange(4)).reshape(-1)
  for i, (cls, box) in enumerate(outs):
    diffs[f'P{i + 3} logits'] = assert_close(f'P{i + 3} logits', cls,
                                             _nhwc(want[f'cls{i}'])[..., cls_idx])
    diffs[f'P{i + 3} deltas'] = assert_close(f'P{i + 3} deltas', box,
                                             _nhwc(want[f'reg{i}'])[..., box_idx])
  _report('retina', diffs)
  from detx.models.heads.retina import level_anchors
  a = module.cfg.anchor
  for i, l in enumerate(range(3, 8)):
    ours = np.asarray(level_anchors([(SIZE >> l,) * 2], [2.0 ** l], a.base_scale,
                                    a.scales_per_octave, a.aspect_ratios)[0][:9])
    theirs = want[f'anchors{i}'][:9][perm]
    # widths and heights within 10% (detx rounds the base sizes: up to 6% apart); another
    # size is 26% off (2^(1/3)), another ratio 41% (sqrt 2)
    np.testing.assert_allclose(ours[:, 2:] - ours[:, :2] + 1, theirs[:, 2:] - theirs[:, :2],
                               rtol=0.1)
