"""Datasets (tfds builders read without TensorFlow), transforms and loaders.

  from detx.data import loader
  dataset = loader.build(config, 'train')        # prepares once, then reads
  for batch in loader.train_iterator(config, dataset, start_step=0): ...
"""
from detx.data.coco import DataError

__all__ = ['DataError']
