"""Input pipelines: how a detector family's batches are made, by name.

  from detx.data import loader, pipelines
  pipeline = pipelines.for_config(config)     # the model family's pipeline
  dataset = loader.build(config, 'train')     # prepares once, then reads
  for batch in pipeline.train_iterator(dataset, start_step=0): ...
  for batch in pipeline.eval_iterator(loader.build(config, 'val')): ...
  batch = pipeline.eval_batch([rgb_uint8_image])  # predict / benchmark
  element = pipeline.padding_example()            # model init

The name comes from the model contract (detx.models.base.family(config).pipeline);
PIPELINES maps it to the class (detx/data/pipelines/base.py says what every
pipeline provides). Adding a pipeline: a module here with a Pipeline subclass,
its per-example transforms in detx/data/transforms/, one row in PIPELINES.
"""
from detx.data.pipelines.base import Pipeline
from detx.data.pipelines.rcnn import RcnnPipeline
from detx.data.pipelines.ssd import SsdPipeline
from detx.data.pipelines.yolo import YoloPipeline

PIPELINES = {
    'yolo': YoloPipeline,
    'rcnn': RcnnPipeline,
    'ssd': SsdPipeline,
}


def for_config(config) -> Pipeline:
  """The input pipeline of config.model.name's family, built from `config`."""
  from detx.models.base import family
  name = family(config).pipeline
  if name not in PIPELINES:
    raise ValueError(f'unknown input pipeline {name!r}; known: {", ".join(PIPELINES)}')
  return PIPELINES[name](config)


__all__ = ['PIPELINES', 'Pipeline', 'RcnnPipeline', 'SsdPipeline', 'YoloPipeline', 'for_config']
