"""The standard config every detx config derives from, and a loader for configs/*.py.

Configs are plain Python: `configs/<name>.py` defines `get_config()` returning an
`ml_collections.ConfigDict`. Each family has one base under configs/_base/ holding the
family's full Paddle settings (derived from `default()` here); a zoo row loads its family
base with `load()` and states only what differs. Standard keys (DESIGN.md): data.dir, data.train_split,
data.train_limit, data.max_size, eval.split, eval.limit, train.steps,
train.batch_size, train.stop_at, train.log_every, train.checkpoint_every, eval.every, seed.
"""
import difflib
import importlib.util
from pathlib import Path
from typing import Any, Mapping

import ml_collections

# The repository's top-level configs/; a wheel ships the same files as detx/configs/
# (pyproject's package-dir), so an installed detx loads `--config=<name>` anywhere.
_PACKAGED = Path(__file__).resolve().parent / 'configs'
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / 'configs'


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Heads' keys live in the family's base (configs/_base/). Backbone and neck keys are
  # here, the union over detx.models.backbones / necks, so that any family takes any
  # backbone by command-line overrides (--config.model.backbone.name=resnet ...).
  c.model = dict(name='', num_classes=80, dtype='float32', remat=False, pretrained='',
                 anchor_scale=0.0)  # 0: detx.models.base.anchor_scale decides
  c.model.backbone = dict(
      name='resnet',
      depth=50, variant='b', groups=1, group_width=64,  # resnet, senet: b/vd, ResNeXt groups
      norm='affine', freeze_norm=True, freeze_at=2,     # resnet, senet (mobilenet: norm*)
      depths=(1, 2, 8, 8, 4), width=1.0,                # darknet: blocks per stage, width
      scale=1.0, extra_blocks=False,                    # mobilenet: conv_group_scale, and
      extra_filters=((256, 512), (128, 256), (128, 256), (64, 128)))  # SSD's extra blocks
  c.model.neck = dict(name='none', channels=256, min_level=2, max_level=6,
                      extra_convs=False)  # 'fpn' or 'none' (C4: res4 feeds the heads)
  c.data = dict(
      name='coco', dir='', train_split='train', train_limit=0, max_size=0,
      max_boxes=50, num_workers=2, train_sizes=(608,), mixup_epochs=0,
      size_group=0,  # YOLOv3: images per drawn train size (Paddle: 8); 0 = the batch
      augment='full', cache_dir='', shuffle=True, bad_boxes='error',
      exif='ignore', bad_images='error', empty_images='keep',
      image_dtype='float32',  # 'uint8': the model normalises (detx.models.inputs)
      # the R-CNN pipeline (detx.data.pipelines.rcnn): resize, padding
      short_side=800, long_side=1333, pad_multiple=32,
      keep_crowd=False, buckets=())  # buckets: explicit [h, w] pad shapes; () = derived
  # eval.metric: 'coco' (bbox, + segm for mask models) or 'voc' (voc/mAP at IoU 0.5,
  # eval.map_type '11point' or 'integral'); detx.evaluation.EVALUATORS.
  # eval.sizes: evaluate at each of these square sizes (YOLOv3; bbox@416/AP, ...), the
  # first as the headline; () = eval.size only (detx.evaluation.loop.evaluate).
  # eval.geometry (R-CNN, RetinaNet): 'paddle' zeroes features and drops anchors beyond
  # Paddle's eval input (detx.models.extent); 'bucket' reads the whole pad bucket (faster).
  c.eval = dict(split='val', limit=0, size=608, batch_size=8, every=0, draw_images=4,
                metric='coco', map_type='11point', sizes=(), geometry='paddle')
  # eval.backend: COCO metrics by 'pycocotools' or 'faster_coco_eval' (an optional
  # package, the same stats; detx.evaluation.coco).
  c.eval.backend = 'pycocotools'
  c.train = dict(steps=1000, batch_size=8, stop_at=0, log_every=20,
                 checkpoint_every=500, keep_checkpoints=3, max_bad_steps=20,
                 best_metric='bbox/AP', inject_nan_steps=(),
                 param_sharding='replicated', grad_accum=1)
  c.optim = dict(base_lr=0.001, momentum=0.9, weight_decay=0.0, clip_norm=0.0)
  c.compile_cache = '~/.cache/detx/jax'  # JAX persistent compilation cache; '' = off
  return c


def load(name_or_path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads `configs/<name>.py` (or a path; `_base/<family>` for a family base) and
  returns its get_config() (get_config(arg) when arg is given)."""
  path = resolve(name_or_path)
  spec = importlib.util.spec_from_file_location(f'detx_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def names() -> list[str]:
  """The configs a bare name loads: configs/*.py (the zoo rows and the quickstart)."""
  return sorted(p.stem for p in CONFIG_DIR.glob('*.py'))


def resolve(name_or_path: str) -> Path:
  """The file a config spec names: an existing path, or a bare name (`quickstart`,
  `_base/yolov3`) in CONFIG_DIR. detx.errors.PathError listing the close names if none."""
  path = Path(name_or_path).expanduser()
  if path.is_file():
    return path
  if not path.suffix and (CONFIG_DIR / f'{name_or_path}.py').is_file():
    return CONFIG_DIR / f'{name_or_path}.py'
  from detx.errors import PathError
  as_path = bool(path.suffix) or '/' in name_or_path
  close = [f'configs/{n}.py' if as_path else n
           for n in difflib.get_close_matches(path.stem, names(), n=3)]
  if close:
    listed = ', '.join(close[:-1]) + ' or ' + close[-1] if len(close) > 1 else close[0]
    hint = f'; did you mean {listed}?'
  else:
    hint = f'; the configs are: {", ".join(names())}'
  raise PathError(f'no config file {name_or_path}{hint}')


def set_schedule(config, preset: str, **schedule) -> ml_collections.ConfigDict:
  """optim.schedule from a detx.schedules preset and train.steps at its length;
  `schedule` overrides fields of the block (e.g. ref_warmup=1000, warmup_factor=0.1)."""
  from detx import schedules
  config.optim.schedule = schedules.schedule_config(preset)
  config.optim.schedule.update(schedule)
  config.train.steps = config.optim.schedule.ref_steps
  return config


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any]):
  """Sets dotted keys in place, e.g. override(c, {'data.max_size': 128}); returns config.
  A missing parent raises KeyError (ml_collections suggests close names)."""
  for key, value in values.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
