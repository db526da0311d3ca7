"""detx.evaluation.loop: eval.metric picks the evaluator; the loop feeds it every image
of the split (an oracle eval step that returns the ground truth scores perfectly)."""
import numpy as np
import pytest

from detx import evaluation, sharding
from detx.data import loader
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
