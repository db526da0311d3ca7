"""detx.evaluation.loop: eval.metric picks the evaluator; the loop feeds it every image
of the split (an oracle eval step that returns the ground truth scores perfectly)."""
import numpy as np
import pytest

from detx import evaluation, sharding
from detx.data import loader
from detx.errors import ConfigError
from detx.evaluation import voc
from detx.models.base import build_model
from tests.helpers import tiny_config


def oracle_step(dataset, k=8):
  """An eval step that returns each image's ground truth (original pixels, legacy
  xyxy) as its detections, in the eval iterator's image-id order."""
  gt = voc.coco_ground_truth(dataset.annotation_file, dataset.image_ids)
  ids = iter(dataset.image_ids)

  def step(variables, batch):
    n = batch['image'].shape[0]
    out = dict(boxes=np.zeros((n, k, 4), np.float32), scores=np.zeros((n, k), np.float32),
               classes=np.zeros((n, k), np.int32), valid=np.zeros((n, k), bool))
    for i in range(n):
      image_id = next(ids, None)
      if image_id is None:  # batch padding
        continue
      boxes, labels, _ = gt[int(image_id)]
      m = min(len(boxes), k)
      out['boxes'][i, :m], out['classes'][i, :m] = boxes[:m], labels[:m]
      out['scores'][i, :m], out['valid'][i, :m] = 1.0, True
    return out
  return step


@pytest.mark.parametrize('metric,map_type,expected', [
    ('coco', '11point', {'bbox/AP', 'bbox/AP50', 'bbox/ARl'}),
    ('voc', '11point', {'voc/mAP'}),
    ('voc', 'integral', {'voc/mAP'}),
])
def test_eval_metric_picks_the_evaluator(tmp_path, metric, map_type, expected):
  c = tiny_config(tmp_path, **{'eval.metric': metric, 'eval.map_type': map_type,
                               'eval.batch_size': 3})  # 8 val images: the last batch pads
  dataset = loader.build(c, c.eval.split)
  module, _ = build_model(c)
  result = evaluation.evaluate(c, module, None, sharding.make_mesh(), oracle_step(dataset),
                               dataset=dataset)
  assert expected <= set(result)
  assert not any(k.startswith('voc/' if metric == 'coco' else 'bbox/') for k in result)
  assert result['eval/images'] == dataset.num_images == 8
  if metric == 'voc':
    assert result['voc/mAP'] == 1.0
  else:
    assert result['bbox/AP'] > 0.99


def test_unknown_metric(tmp_path):
  c = tiny_config(tmp_path, **{'eval.metric': 'ap'})
  with pytest.raises(ValueError, match="unknown eval.metric 'ap'; known: coco, voc"):
    evaluation.make_evaluator(c, loader.build(c, c.eval.split))


def size_dependent_step(dataset, rows):
  """oracle_step for any number of passes over the split (`rows` per pass, padding
  included), its boxes shifted right by a quarter of their width unless the batch's
  images are 64 pixels: the metrics depend on the size evaluated at."""
  import itertools
  gt = voc.coco_ground_truth(dataset.annotation_file, dataset.image_ids)
  ids = itertools.cycle(list(dataset.image_ids) + [None] * (rows - dataset.num_images))

  def step(variables, batch):
    n, size = batch['image'].shape[:2]
    out = dict(boxes=np.zeros((n, 8, 4), np.float32), scores=np.zeros((n, 8), np.float32),
               classes=np.zeros((n, 8), np.int32), valid=np.zeros((n, 8), bool))
    for i in range(n):
      image_id = next(ids)
      if image_id is None:
        continue
      boxes, labels, _ = gt[int(image_id)]
      m = min(len(boxes), 8)
      b = np.array(boxes[:m], np.float32)
      if size != 64:
        b[:, [0, 2]] += 0.25 * (b[:, 2:3] - b[:, 0:1])
      out['boxes'][i, :m], out['classes'][i, :m] = b, labels[:m]
      out['scores'][i, :m], out['valid'][i, :m] = 1.0, True
    return out
  return step


def test_eval_sizes_prefixes_each_size(tmp_path):
  """eval.sizes=(64, 96): both sizes' metrics under bbox@64/ and bbox@96/, the plain
  keys (the headline) are the first size's, and each equals a single-size evaluation."""
  c = tiny_config(tmp_path, **{'eval.batch_size': 3})  # 8 val images: 9 rows a pass
  dataset = loader.build(c, c.eval.split)
  module, _ = build_model(c)
  mesh = sharding.make_mesh()

  def run(**keys):
    from detx import config as cfg
    return evaluation.evaluate(cfg.override(c.copy_and_resolve_references(), keys), module,
                               None, mesh, size_dependent_step(dataset, 9), dataset=dataset,
                               report_dir=tmp_path / 'report')
  both = run(**{'eval.sizes': (64, 96)})
  single = {s: run(**{'eval.size': s}) for s in (64, 96)}
  assert single[64]['bbox/AP'] > 0.99 > single[96]['bbox/AP'] + 0.2
  for s in (64, 96):
    for k in ('bbox/AP', 'bbox/AP50', 'eval/images'):
      assert both[k.replace('/', f'@{s}/', 1)] == single[s][k], (s, k)
    per_class = [k for k in single[s] if k.startswith('bbox/AP/')]
    assert per_class and all(both[k.replace('bbox/', f'bbox@{s}/')] == single[s][k]
                             for k in per_class)
  assert {k: v for k, v in both.items() if '@' not in k and not k.startswith(('eval/', 'jit/'))
          } == {k: v for k, v in single[64].items() if not k.startswith(('eval/', 'jit/'))}
  assert (tmp_path / 'report' / 'report.txt').exists()
  assert (tmp_path / 'report' / '96' / 'report.txt').exists()


@pytest.mark.parametrize('config,keys,message', [
    ('faster_rcnn_r50_1x', {'eval.sizes': (608, 416)}, 'applies to square-input'),
    ('quickstart', {'eval.sizes': (608, 400)}, 'distinct positive multiples of 32'),
    ('quickstart', {'eval.sizes': (416, 416)}, 'distinct positive multiples of 32'),
])
def test_eval_sizes_refused(config, keys, message):
  from detx import config as cfg
  with pytest.raises(ConfigError, match=message):
    evaluation.loop.eval_sizes(cfg.override(cfg.load(config), keys))



def test_bad_eval_sizes_refused_before_training(tmp_path):
  from detx import train
  c = tiny_config(tmp_path, **{'eval.sizes': (64, 100)})
  with pytest.raises(ConfigError, match='multiples of 32'):
    train.train_and_evaluate(c, str(tmp_path / 'wd'))
  assert not (tmp_path / 'wd' / 'checkpoints').exists()
