"""python -m detx.zoo: the table (detx.zoo_table against shared/reference/ZOO.md and the
ymls of PaddleDetection 597145c) and --check on a tiny YOLOv3 (nothing is downloaded)."""
import re
from pathlib import Path

import jax

from detx import config as cfg
from detx import zoo
from detx.weights import paddle as pw
from detx.zoo_table import ROWS

ZOO_MD = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'ZOO.md'

# row -> pretrain_weights of configs/<row>.yml at PaddleDetection 597145c
IM = 'https://paddle-imagenet-models-name.bj.bcebos.com/'
PRETRAIN = {
    'cascade_rcnn_r50_fpn_1x': IM + 'ResNet50_cos_pretrained.tar',
    'faster_rcnn_r101_1x': IM + 'ResNet101_pretrained.tar',
    'faster_rcnn_r101_fpn_1x': 'http://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_pretrained.tar',
    'faster_rcnn_r101_fpn_2x': 'http://paddle-imagenet-models-name.bj.bcebos.com/ResNet101_pretrained.tar',
    'faster_rcnn_r101_vd_fpn_1x': IM + 'ResNet101_vd_pretrained.tar',
    'faster_rcnn_r101_vd_fpn_2x': IM + 'ResNet101_vd_pretrained.tar',
    'faster_rcnn_r50_1x': IM + 'ResNet50_cos_pretrained.tar',
    'faster_rcnn_r50_2x': IM + 'ResNet50_cos_pretrained.tar',
    'faster_rcnn_r50_fpn_1x': IM + 'ResNet50_cos_pretrained.tar',
    'faster_rcnn_r50_fpn_2x': IM + 'ResNet50_cos_pretrained.tar',
    'faster_rcnn_r50_vd_1x': IM + 'ResNet50_vd_pretrained.tar',
    'faster_rcnn_r50_vd_fpn_2x': IM + 'ResNet50_vd_pretrained.tar',
    'faster_rcnn_se154_vd_fpn_s1x': IM + 'SE154_vd_pretrained.tar',
    'faster_rcnn_x101_vd_64x4d_fpn_1x': IM + 'ResNeXt101_vd_64x4d_pretrained.tar',
    'faster_rcnn_x101_vd_64x4d_fpn_2x': IM + 'ResNeXt101_vd_64x4d_pretrained.tar',
    'mask_rcnn_r101_fpn_1x': IM + 'ResNet101_pretrained.tar',
    'mask_rcnn_r101_vd_fpn_1x': IM + 'ResNet101_vd_pretrained.tar',
    'mask_rcnn_r50_1x': IM + 'ResNet50_cos_pretrained.tar',
    'mask_rcnn_r50_2x': IM + 'ResNet50_cos_pretrained.tar',
    'mask_rcnn_r50_fpn_1x': IM + 'ResNet50_cos_pretrained.tar',
    'mask_rcnn_r50_fpn_2x': IM + 'ResNet50_cos_pretrained.tar',
    'mask_rcnn_r50_vd_fpn_2x': IM + 'ResNet50_vd_pretrained.tar',
    'mask_rcnn_se154_vd_fpn_s1x': IM + 'SE154_vd_pretrained.tar',
    'mask_rcnn_x101_vd_64x4d_fpn_1x': IM + 'ResNeXt101_vd_64x4d_pretrained.tar',
    'mask_rcnn_x101_vd_64x4d_fpn_2x': IM + 'ResNeXt101_vd_64x4d_pretrained.tar',
    'retinanet_r101_fpn_1x': IM + 'ResNet101_pretrained.tar',
    'retinanet_r50_fpn_1x': IM + 'ResNet50_cos_pretrained.tar',
    'ssd_mobilenet_v1_voc': 'https://paddlemodels.bj.bcebos.com/object_detection/ssd_mobilenet_v1_coco_pretrained.tar',
    'yolov3_darknet': IM + 'DarkNet53_pretrained.tar',
    'yolov3_darknet_voc': IM + 'DarkNet53_pretrained.tar',
    'yolov3_mobilenet_v1': 'http://paddle-imagenet-models-name.bj.bcebos.com/MobileNetV1_pretrained.tar',
    'yolov3_mobilenet_v1_voc': 'http://paddle-imagenet-models-name.bj.bcebos.com/MobileNetV1_pretrained.tar',
    'yolov3_r34': IM + 'ResNet34_pretrained.tar',
    'yolov3_r34_voc': IM + 'ResNet34_pretrained.tar',
}


def test_table_has_every_row_of_the_zoo_page_with_its_numbers():
  names = [r.name for r in ROWS]
  assert len(names) == len(set(names)) == 34
  if ZOO_MD.is_file():  # the published numbers as the zoo page states them
    page = {}
    for line in ZOO_MD.read_text().splitlines():
      cells = [c.strip() for c in line.strip('|').split('|')]
      if len(cells) > 2 and re.fullmatch(r'[a-z0-9_]+', cells[0]) and '_' in cells[0]:
        page[cells[0]] = [float(c) for c in cells[1:] if re.fullmatch(r'\d+\.\d+', c)]
    assert set(page) == set(names)
    for r in ROWS:
      assert list(r.published.values()) == page[r.name], r.name
  for r in ROWS:  # every config row is in the table
    assert r.v1_url == f'https://paddlemodels.bj.bcebos.com/object_detection/{r.name}.tar'
    assert not r.v2 or r.v2_url.startswith('https://paddledet.bj.bcebos.com/models/')
  assert set(cfg.names()) - {'quickstart'} <= set(names)


def test_listing(capsys):
  assert zoo.run(['zoo']) == 0
  out = capsys.readouterr().out
  for r in ROWS:
    assert f'{r.name}  [{r.dataset}, {r.schedule}]' in out and r.v1_url in out
  assert ('mask_rcnn_r50_fpn_1x  [coco, 1x]  box AP 37.9, mask AP 34.2\n'
          '    backbone weights: ') in out
  assert 'released 2.x:     https://paddledet.bj.bcebos.com/models/yolov3_darknet53_270e_coco' \
         '.pdparams' in out
  assert zoo.run(['zoo', '--check', '--config=yolov3_darknet']) == 2
  assert zoo.run(['zoo', '--check', '--config=quickstart', '--data=x']) == 2
  err = capsys.readouterr().err.splitlines()
  assert err[0] == 'detx: --check needs --data=DIR (the dataset to evaluate on)'
  assert err[1].startswith('detx: --check needs --config=<zoo row>, got quickstart;')


def test_check_prints_published_against_measured(tmp_path, coco_tiny_dir, tmp_cache, capsys):
  """A shallow, narrow yolov3_darknet at eval.size 320 on 4 coco_tiny images, its
  weights a Paddle directory written from a random init: the command runs end to end
  and prints the published AP at 320 (34.8) against the measured one."""
  tiny = ['--config.model.backbone.depths=(1,1,1,1,1)', '--config.model.backbone.width=0.125',
          '--config.eval.size=320', '--config.eval.limit=4', '--config.eval.batch_size=4',
          f'--config.data.cache_dir={tmp_cache}',
          '--config.data.num_workers=0']
  c = cfg.load('yolov3_darknet')
  cfg.override(c, {'model.backbone.depths': (1, 1, 1, 1, 1), 'model.backbone.width': 0.125})
  from detx import sharding, train
  from detx.models.base import build_model
  module, rules = build_model(c)
  tx, _ = train.make_optimizer(c, rules)
  state = train.init_state(c, module, tx, sharding.make_mesh())
  pw.save_paddle_weights(jax.device_get(state.variables()), tmp_path / 'w', rules.paddle)
  argv = ['zoo', '--check', '--config=yolov3_darknet', f'--weights={tmp_path / "w"}',
          f'--data={coco_tiny_dir}', *tiny]
  assert zoo.run(argv) == 0
  out = capsys.readouterr().out
  assert f'pretrained from {tmp_path / "w"}: loaded ' in out
  assert re.search(r'^yolov3_darknet bbox/AP@320: published 34.8, measured \d+\.\d$', out, re.M)


def test_configs_name_the_weights_their_yml_started_from():
  """model.pretrained of every zoo config is its yml's pretrain_weights (literal above);
  tests and benchmarks override it with '' (random init, nothing downloaded)."""
  rows = [n for n in cfg.names() if n != 'quickstart']
  assert rows and set(rows) <= set(PRETRAIN)
  for name in rows:
    assert cfg.load(name).model.pretrained == PRETRAIN[name], name
  assert cfg.load('quickstart').model.pretrained == ''
