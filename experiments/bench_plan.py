"""What experiments/benchmark.py measures for a model: its rows (mode, size, batch) and
the synthetic batch of each (random images through the input pipeline's contract)."""
import numpy as np

from detx.data import pipelines as input_pipelines
from detx.data.transforms import rcnn as rcnn_transforms
from experiments.bench_common import is_rcnn

# model: (train sizes, inference sizes); other YOLO / SSD configs: their pipeline's
# largest train size and eval size.
PLANS = {
    'yolov3_darknet': ((608, 320), (608, 416, 320)),
    'yolov3_mobilenet_v1': ((608,), (608,)),
    'yolov3_mobilenet_v1_voc': ((608,), (608,)),
}
# (train batch, infer batch) on a CPU and on an accelerator, by config name, else by input
# pipeline. Accelerator batches fill one GPU (issue 18's H200 rows: YOLOv3-608 at 64, Mask
# R-CNN at 16); CPU batches keep a row to seconds on a 2-core machine.
BATCHES = {
    'yolo': {'cpu': (2, 1), 'accelerator': (64, 64)},
    'ssd': {'cpu': (2, 1), 'accelerator': (256, 256)},
    'rcnn': {'cpu': (1, 1), 'accelerator': (16, 16)},
    'retinanet_r50_fpn_1x': {'cpu': (1, 1), 'accelerator': (16, 8)},
}
# Original image size of the synthetic R-CNN batch: resized to 800x1333 at the zoo's sizes.
RCNN_ORIG_HW = (600, 1000)


def default_batches(name, config, platform: str) -> tuple[int, int]:
  """(train, infer) batch of BATCHES for a config on 'cpu' or any accelerator."""
  key = name if name in BATCHES else input_pipelines.for_config(config).name
  return BATCHES[key]['cpu' if platform == 'cpu' else 'accelerator']


def _yolo_batch(config, size, n, rng):
  """A synthetic YOLO / SSD batch (their contracts share these keys)."""
  m = config.data.max_boxes
  xy = rng.uniform(0, 0.6, (n, m, 2))
  wh = rng.uniform(0.05, 0.4, (n, m, 2))
  if config.data.get('image_dtype', 'float32') == 'uint8':
    image = rng.integers(0, 256, (n, size, size, 3), np.uint8)
  else:
    image = rng.standard_normal((n, size, size, 3)).astype(np.float32)
  return {
      'image': image,
      'boxes': np.concatenate([xy, xy + wh], -1).astype(np.float32),
      'classes': rng.integers(0, config.model.num_classes, (n, m)).astype(np.int32),
      'scores': np.ones((n, m), np.float32),
      'box_mask': (np.arange(m) < 10)[None].repeat(n, 0),
      'orig_size': np.full((n, 2), size, np.int32),
  }


def rcnn_batch(config, n: int, rng, num_boxes: int = 10) -> dict:
  """A synthetic R-CNN train/eval batch of the pipeline's contract: n random
  RCNN_ORIG_HW images through its eval transform (resized as
  data.short_side/long_side (/max_size) say, zero-padded into the smallest
  bucket), with `num_boxes` random GT boxes each (box-filling GT masks for
  mask models)."""
  pipeline = input_pipelines.for_config(config)
  oh, ow = RCNN_ORIG_HW
  batch = pipeline.eval_batch([rng.integers(0, 256, (oh, ow, 3), np.uint8) for _ in range(n)])
  h, w = (int(v) for v in batch['image_hw'][0])
  k = min(num_boxes, pipeline.max_boxes)
  for i in range(n):
    xy = rng.uniform(0, 0.6, (k, 2)) * (w, h)
    wh = rng.uniform(0.05, 0.4, (k, 2)) * (w, h)
    batch['boxes'][i, :k] = np.concatenate([xy, np.minimum(xy + wh, (w - 1, h - 1))], -1)
    batch['classes'][i, :k] = rng.integers(0, config.model.num_classes, k)
    batch['box_mask'][i, :k] = True
    if 'gt_polys' in batch:  # each instance's polygon: its box (original pixels)
      rcnn_transforms.box_polygons(batch['boxes'][i, :k] / batch['scale'][i],
                                   batch['gt_polys'][i], batch['gt_poly_ids'][i])
  return batch


def plan(name, config, sizes_override=(), rcnn_batch_size=None, batches=(), platform='cpu'):
  """[(mode, size label, batch size, make_batch(rng))] of a model: each of its sizes at
  each batch of `batches` (default: BATCHES for the platform; rcnn_batch_size for
  R-CNN rows)."""
  train_bs, infer_bs = default_batches(name, config, platform)
  if is_rcnn(config):
    if rcnn_batch_size:
      train_bs = infer_bs = rcnn_batch_size
    pad = input_pipelines.for_config(config).train_shapes()[0]
    train_sizes = infer_sizes = (f'{pad[0]}x{pad[1]}',)
    make = lambda size, b: (lambda rng: rcnn_batch(config, b, rng))
  else:
    if name in PLANS:
      train_sizes, infer_sizes = PLANS[name]
    else:
      pipeline = input_pipelines.for_config(config)
      train_sizes = (max(h for h, _ in pipeline.train_shapes()),)
      infer_sizes = (int(getattr(pipeline, 'eval_size', None) or pipeline.size),)
    if sizes_override:
      train_sizes = infer_sizes = sizes_override
    make = lambda size, b: (lambda rng: _yolo_batch(config, int(size), b, rng))
  out = []
  for mode, sizes, bs in (('train', train_sizes, train_bs), ('infer', infer_sizes, infer_bs)):
    for size in sizes:
      for b in batches or (bs,):
        size = size if isinstance(size, str) else int(size)
        out.append((mode, size, int(b), make(size, int(b))))
  return out
