"""Parity of the YOLOv3 / SSD side with PaddleDetection 2.6 (issue 19, item 2).

One run of tests/parity/ppdet_yolo.py in the ppdet venv (module-scoped fixture) builds
ppdet's DarkNet53 + YOLOv3FPN + YOLOv3Head, MobileNet-V1 + the same neck and head (as
yolov3_mobilenet_v1 uses it) and MobileNet-V1 with its extra blocks + SSDHead (as
ssd_mobilenet_v1_voc uses it) with random weights, and runs them on an input written
here. Each test converts that state dict as `model.pretrained=<x>.pdparams` does
(detx.weights.ppdet2 renames, then the model's 1.x rules through
detx.weights.paddle.load_paddle_weights with fuse_norm), runs detx's model on the same
input and compares, before any decoding or NMS, each backbone level and each raw head
output (and SSD's priors) with ppdet's: max |detx - ppdet| <= 2e-4 x max |ppdet|.
"""
import numpy as np
import pytest

from tests.parity.env import assert_close as _assert_close, run_ppdet

pytestmark = [pytest.mark.slow, pytest.mark.parity]

CASES = {  # case: (detx config, input size)
    'darknet_yolo': ('yolov3_darknet', 64),
    'mobilenet_yolo': ('yolov3_mobilenet_v1', 64),
    'mobilenet_ssd': ('ssd_mobilenet_v1_voc', 300),  # the priors are sized for 300
}


@pytest.fixture(scope='module')
def ppdet_out(tmp_path_factory):
  out = tmp_path_factory.mktemp('ppdet_yolo')
  rng = np.random.default_rng(0)
  for case, (_, size) in CASES.items():
    np.savez(out / f'input_{case}.npz',
             image=rng.normal(0, 1, (1, 3, size, size)).astype(np.float32))
  run_ppdet('ppdet_yolo.py', {'seed': 0, 'cases': list(CASES)}, out)
  yield out
  for case in CASES:  # ppdet's state dicts (~0.3 GB): not kept among pytest's tmp dirs
    (out / f'{case}.npz').unlink(missing_ok=True)


def assert_close(name, got, want):
  print(f'{name}: max |detx - ppdet| / max |ppdet| = {_assert_close(name, got, want):.2g}')


def detx_model(case, ppdet_out):
  """(config, module, variables loaded from ppdet's state dict, NHWC input)."""
  import jax
  from detx import config as cfg
  from detx.models import base
  from detx.weights import paddle as pw
  from detx.weights import ppdet2
  config = cfg.load(CASES[case][0])
  config.model.pretrained = ''
  module, rules = base.build_model(config)
  image = np.load(ppdet_out / f'input_{case}.npz')['image'].transpose(0, 2, 3, 1)
  init = ((lambda m, x: m.init_params(x)) if case == 'mobilenet_ssd'
          else (lambda m, x: m.features(x, False)))
  variables = module.init(jax.random.PRNGKey(0), image, method=init)
  got = np.load(ppdet_out / f'{case}.npz')
  state = {k[3:]: got[k] for k in got.files if k.startswith('sd/')}
  source, unmatched = ppdet2.to_1x(state, config)
  assert not unmatched, f'2.x names without a rename: {unmatched[:5]}'
  variables, report = pw.load_paddle_weights(variables, source, rules.paddle, strict=False,
                                             fuse_norm=True)
  assert report.ok and not report.unexpected, str(report)
  want = {k[4:]: got[k] for k in got.files if k.startswith('out/')}
  return config, module, variables, image, want


def nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def check_yolo(case, ppdet_out):
  from detx.models.yolov3 import LEVELS
  _, module, variables, image, want = detx_model(case, ppdet_out)
  feats = module.apply(variables, image, method=lambda m, x: m.backbone(x, False))
  for i, level in enumerate(LEVELS):
    assert_close(f'{case} C{level}', nchw(feats[level]), want[f'feat{i}'])
  heads = module.apply(variables, image, False, method=lambda m, x, t: m.features(x, t))
  for i, out in enumerate(heads):
    assert_close(f'{case} head{i}', nchw(out), want[f'head{i}'])


def test_darknet53_yolov3_head_match_ppdet(ppdet_out):
  check_yolo('darknet_yolo', ppdet_out)


def test_mobilenet_v1_yolov3_match_ppdet(ppdet_out):
  check_yolo('mobilenet_yolo', ppdet_out)


def test_mobilenet_v1_ssd_head_and_priors_match_ppdet(ppdet_out):
  _, module, variables, image, want = detx_model('mobilenet_ssd', ppdet_out)

  def run(m, x):
    feats = m.features(x, False)
    loc, conf = m.head(feats)
    return feats, loc, conf, m.priors(feats, x.shape[1:3])[0]

  feats, loc, conf, priors = module.apply(variables, image, method=run)
  for i, f in enumerate(feats):
    assert_close(f'ssd level{i + 4}', nchw(f), want[f'feat{i}'])
  assert_close('ssd loc', loc, want['loc'])
  assert_close('ssd conf', conf, want['conf'])
  assert_close('ssd priors', priors, want['priors'])
