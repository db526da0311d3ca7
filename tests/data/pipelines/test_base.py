"""The pipeline table: each model family's pipeline, chosen by the model
contract (detx.models.base.family), and what every pipeline provides."""
import numpy as np
import pytest

from detx.data import pipelines
from detx.models.base import FAMILIES


def test_for_config_follows_the_model_family(data_config, tmp_path):
  cfg = data_config(tmp_path)
  want = {'yolov3': pipelines.YoloPipeline, 'faster_rcnn': pipelines.RcnnPipeline,
          'mask_rcnn': pipelines.RcnnPipeline, 'cascade_rcnn': pipelines.RcnnPipeline,
          'retinanet': pipelines.RcnnPipeline}
  for name in FAMILIES:
    cfg.model.name = name
    pipeline = pipelines.for_config(cfg)
    assert pipelines.PIPELINES[pipeline.name] is type(pipeline)
    if name in want:
      assert type(pipeline) is want[name], name
    # Every pipeline: a padding element of its first eval shape, a user image's batch.
    pad = pipeline.padding_example()
    assert not pad['valid'] and pad['image_id'] == -1
    batch = pipeline.eval_batch([np.zeros((30, 40, 3), np.uint8)])
    assert batch.keys() == pad.keys() and batch['valid'].tolist() == [True]
    assert pipeline.train_shapes()
  cfg.model.name = 'nope'
  with pytest.raises(ValueError, match='unknown model.name'):
    pipelines.for_config(cfg)


def test_defaults_come_from_the_config(data_config, tmp_path):
  """No fallback defaults in the data code: a missing key is an error."""
  cfg = data_config(tmp_path)
  del cfg.data['max_boxes']
  with pytest.raises(AttributeError, match='max_boxes'):
    pipelines.for_config(cfg)
