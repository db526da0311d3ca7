"""The model contract (detx.models.base): the family table, and any family on any
backbone by command-line overrides alone."""
import pytest
from absl import flags
from ml_collections import config_flags

from detx import config as cfg
from detx.models import base
from detx.optim import ParamRules
from tests.helpers import tiny_config


def test_every_family_declares_its_contract():
  from detx.data import pipelines
  for name, fam in base.FAMILIES.items():
    assert fam.pipeline in pipelines.PIPELINES, name
    assert {'image'} <= set(fam.train_keys) and {'image'} <= set(fam.eval_keys), name
  assert base.family('mask_rcnn').has_masks and not base.family('faster_rcnn').has_masks
  with pytest.raises(ValueError, match="unknown model.name 'nope'"):
    base.family('nope')


def test_anchor_scale_rule():
  y, r = cfg.load('yolov3_darknet'), cfg.load('faster_rcnn_r50_fpn_1x')
  assert base.anchor_scale(y) == base.anchor_scale(r) == 1.0
  y.data.max_size, r.data.max_size = 304, 1333 // 2
  assert base.anchor_scale(y) == pytest.approx(0.5)      # of YOLO's largest size, 608
  assert base.anchor_scale(r) == pytest.approx(666 / 1333)  # of the R-CNN long side
  r.model.anchor_scale = 0.25
  assert base.anchor_scale(r) == 0.25


def _parse(config_path, *overrides):
  """The config as `python -m detx.main --config=... <overrides>` builds it."""
  argv = ['detx.main', f'--config={config_path}', *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize('config,overrides', [
    ('retinanet_r50_fpn_1x', ['--config.model.backbone.depth=34']),
    ('yolov3_darknet', ['--config.model.backbone.name=resnet',
                        '--config.model.backbone.variant=d']),
])
def test_any_backbone_by_command_line(config, overrides, tmp_path, monkeypatch):
  from detx import train
  from detx.models.backbones import resnet
  monkeypatch.setitem(resnet.BLOCKS, 34, (1, 1, 1, 1))  # one block per stage: compile time
  monkeypatch.setitem(resnet.BLOCKS, 50, (1, 1, 1, 1))
  c = _parse(str(cfg.CONFIG_DIR / f'{config}.py'), *overrides)
  small = tiny_config(tmp_path, steps=1, sizes=(64,))  # the generated shapes dataset
  c.unlock()
  c.model.num_classes = 4
  cfg.override(c, {k: small[k.split('.')[0]][k.split('.')[1]] for k in (
      'data.dir', 'data.cache_dir', 'data.max_boxes', 'eval.batch_size', 'train.batch_size')})
  cfg.override(c, {'data.max_size': 64, 'data.train_sizes': (64,), 'eval.size': 64,
                   'data.num_workers': 0, 'train.steps': 1, 'train.log_every': 1,
                   'eval.limit': 4, 'eval.draw_images': 0, 'data.train_limit': 4,
                   'model.pretrained': ''})  # random init: no ImageNet download
  assert c.model.backbone.name == 'resnet'
  assert isinstance(base.build_model(c)[1], ParamRules)
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert 'bbox/AP' in result
