"""Datasets (tfds builders read without TensorFlow), transforms and input pipelines.

  from detx.data import loader, pipelines
  dataset = loader.build(config, 'train')        # prepares once, then reads
  pipeline = pipelines.for_config(config)        # the model family's pipeline
  for batch in pipeline.train_iterator(dataset, start_step=0): ...

  coco.py         the tfds builder of a COCO-format directory, its cache, raw examples
  voc.py          the tfds builder of a VOCdevkit (VOC2007 / 2012, VOC-format data)
  annotations.py  reading and checking the annotation json
  images.py       decoding image files, EXIF orientation, the checked image read
  bad_data.py     DataError, the bad-data switches and the report
  check.py        `python -m detx.data.check`: the report without preparing
  loader.py       Dataset, and the grain batching shared by the pipelines
  workers.py      data.num_workers processes: batches through reused shared memory
  pipelines/      one input pipeline per model family (yolo, rcnn)
  transforms/     their per-example transforms
  masks.py        Mask R-CNN GT crops;  synthetic.py: the generated shapes dataset
"""
from detx.data.bad_data import DataError

__all__ = ['DataError']
