r"""Inference on images: COCO results JSON, and the detections drawn.

  python -m detx.predict --checkpoint=WORKDIR --input=IMAGE_OR_DIR --output=/tmp/pred \
      [--threshold=0.5] [--json_only] [--batch_size=N] [--config.a.b=value ...]
  python -m detx.predict --exported=EXPORT_DIR --input=... --output=...   # detx.export's
  python -m detx.predict --config=configs/<name>.py --config.model.pretrained=WEIGHTS \
      --input=... --output=...     # no checkpoint: released weights (model.pretrained)

The config is the run's own: WORKDIR/config.json (every override given at training
time included) when the workdir holds one, else --config=configs/<name>.py; overrides
given here apply on top of it. One line says which config was used.

Images are read in batches (--batch_size, default eval.batch_size, rounded up to a
multiple of the device count) through the family's eval pipeline (`eval_batch`) and
split over every device of the mesh as training does; the last partial batch is
padded with valid=False images, so every batch has one of the pipeline's static
shapes. The next batch is decoded while the devices run the current one.
--checkpoint takes a workdir, its checkpoints/ directory, one step directory or a
`python -m detx.export` directory (params-only; one made with --format=inference runs
its serialised jax.export program, no model is built; --exported names one directly).
Without --checkpoint, --config.model.pretrained fills the config's model as training's
model.pretrained does (a Paddle 1.x directory or .tar, a PaddleDetection 2.x .pdparams,
a URL or a detx run); classes are then numbered 1..num_classes in the results.

Writes OUTPUT/detections.json (COCO results: image_id, category_id, bbox xywh, score,
file_name, and for mask models the segmentation as RLE with counts as str;
pycocotools' COCO.loadRes reads it; image_id is the file name's number for COCO names,
else the image's index in the input) and, unless --json_only (a submission),
OUTPUT/<image name>.jpg with the kept detections drawn (masks blended in). Kept:
score >= --threshold (default 0.5; 0 with --json_only, which keeps every detection
the model outputs: the model's own score threshold, e.g. model.nms.score_threshold,
still applies).
"""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detx.errors import ConfigError, PathError, UserError, WorkdirError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def list_images(path) -> list[Path]:
  path = Path(path).expanduser()
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  elif path.is_file():
    files = [path]
  else:
    raise PathError(f'--input {path} is neither an image nor a directory')
  if not files:
    raise PathError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
  return files


def run_dir(checkpoint_path) -> Path:
  """The run (or export) directory of a workdir, its checkpoints/ dir or a step dir."""
  path = Path(checkpoint_path).expanduser().resolve()
  while path.name.isdigit() or path.name == 'checkpoints':
    path = path.parent
  return path


def exported_dir(path) -> Path | None:
  """The directory holding inference/manifest.json that `path` designates, if any."""
  path = run_dir(path)
  for d in (path, path.parent):
    if (d / 'inference' / 'manifest.json').is_file():
      return d
  return None


def load_categories(workdir, config):
  """(original category ids, names) saved by training, else numbered classes."""
  path = Path(workdir) / 'categories.json' if workdir else None
  if path is not None and path.is_file():
    cats = json.loads(path.read_text())
    return [c['id'] for c in cats], [c['name'] for c in cats]
  n = config.model.num_classes
  return list(range(1, n + 1)), [f'class {i}' for i in range(n)]


def restore_variables(config, path, mesh):
  """(module, {'params'(, 'batch_stats')}) of config's model from any detx checkpoint
  (a training one: its optimizer state is not used; or a params-only export), the
  shapes checked against the model, placed on the mesh as train.param_sharding says."""
  import jax
  from detx import checkpoint, sharding
  from detx.models.base import build_model, model_inputs
  from detx.train import dummy_batch
  module, _ = build_model(config)
  batch = model_inputs(module, dummy_batch(config), train=False)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), batch, train=False))
  want = {k: abstract[k] for k in ('params', 'batch_stats') if abstract.get(k)}
  step_dir = checkpoint.find(path)
  saved = checkpoint.restore_variables(step_dir)
  shapes = lambda tree: {jax.tree_util.keystr(p): np.shape(x) for p, x in
                         jax.tree_util.tree_leaves_with_path(tree)}
  got = {k: saved.get(k, {}) for k in want}
  a, b = shapes(got), shapes(want)
  bad = [f'{k} {a.get(k, "absent")} there, {b.get(k, "absent")} here'
         for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if bad:
    raise WorkdirError(f'checkpoint {step_dir} holds another model ({len(bad)} arrays '
                       f'differ: {"; ".join(bad[:3])}): predict with the run\'s config')
  got = jax.tree.map(lambda x, w: np.asarray(x, w.dtype), got, want)
  shardings = sharding.state_shardings(want, mesh, config.train.param_sharding)
  return module, jax.device_put(got, shardings)


def pretrained_variables(config, mesh):
  """(module, {'params'(, 'batch_stats')}) of config's model, initialised and filled
  from config.model.pretrained (no checkpoint: a Paddle 1.x / 2.x file, a URL or a detx
  run, as training's model.pretrained), placed on the mesh."""
  import jax
  from detx import sharding
  from detx.models.base import build_model, model_inputs
  from detx.train import dummy_batch
  from detx.weights import pretrained
  module, rules = build_model(config)
  batch = model_inputs(module, dummy_batch(config), train=False)
  initial = jax.jit(lambda: module.init(jax.random.key(config.seed), batch, train=False))()
  variables, summary = pretrained.load(jax.device_get(initial), config.model.pretrained,
                                       rules.paddle, config=config)
  print(summary, flush=True)
  want = {k: variables[k] for k in ('params', 'batch_stats') if variables.get(k)}
  return module, jax.device_put(want, sharding.state_shardings(want, mesh,
                                                               config.train.param_sharding))


class CheckpointModel:
  """The model's jitted eval step on the mesh: batch (numpy) -> detections (numpy)."""

  def __init__(self, config, checkpoint_path, mesh, batch_size: int = 0):
    from detx import evaluation
    self.mesh = mesh
    self.module, self.variables = (restore_variables(config, checkpoint_path, mesh)
                                   if checkpoint_path else pretrained_variables(config, mesh))
    self.keys = self.module.EVAL_KEYS
    self.step = evaluation.make_eval_step(self.module, mesh)
    n = mesh.devices.size
    self.batch_size = -(-(batch_size or config.eval.batch_size) // n) * n

  def __call__(self, batch: dict) -> dict:
    import jax
    from detx import sharding
    inputs = {k: batch[k] for k in self.keys}
    return jax.device_get(self.step(self.variables, sharding.shard_batch(inputs, self.mesh)))


def _batches(files, pipeline, batch_size):
  """(files, decoded images, eval batch padded to batch_size) per chunk of files; the
  next chunk is decoded and transformed in a thread while the caller runs this one."""
  from detx.data import images as im

  def prepare(chunk):
    decoded = [im.decode_image(f.read_bytes(), str(f)) for f in chunk]
    return chunk, decoded, pipeline.eval_batch(decoded, batch_size=batch_size)

  chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
  with ThreadPoolExecutor(1) as pool:
    pending = pool.submit(prepare, chunks[0])
    for k in range(len(chunks)):
      ready = pending.result()
      if k + 1 < len(chunks):
        pending = pool.submit(prepare, chunks[k + 1])
      yield ready


def run(config, checkpoint_path, input_path, output_dir, threshold: float | None = None,
        json_only: bool = False, batch_size: int = 0, exported=None,
        draw_threshold: float | None = None) -> list[dict]:
  """Predicts every image of `input_path` (see the module docstring); returns the
  COCO results it writes to OUTPUT/detections.json. exported: a detx.export directory
  made with --format=inference (None: the one checkpoint_path designates, if any).
  draw_threshold: the former name of `threshold`."""
  import cv2
  from detx import checkpoint, sharding
  from detx.data import pipelines
  from detx.evaluation.results import coco_results
  from detx.ops.masks import paste_masks
  from detx.visualize import draw_detections

  exported = exported_dir(exported) if exported else (
      exported_dir(checkpoint_path) if checkpoint_path else None)
  source = exported or (run_dir(checkpoint_path) if checkpoint_path else None)
  if exported is None and checkpoint_path:
    checkpoint.find(checkpoint_path)  # a missing checkpoint is refused before the model
  files = list_images(input_path)
  if batch_size < 0:
    raise UserError(f'--batch_size={batch_size}: give a positive number (0: eval.batch_size)')
  import jax
  if jax.process_count() > 1:
    raise UserError('detx.predict runs in one process, on its devices: start it without '
                    'multi-process initialisation')
  threshold = threshold if threshold is not None else draw_threshold
  threshold = (0.0 if json_only else 0.5) if threshold is None else float(threshold)
  output_dir = Path(output_dir).expanduser()
  output_dir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  if exported is not None:
    from detx import export
    model = export.ExportedModel(exported, mesh)
    print(f'predict: the exported inference function in {exported / "inference"} '
          f'(jax.export, step {model.manifest["step"]}), no model built', flush=True)
  else:
    model = CheckpointModel(config, checkpoint_path, mesh, batch_size)
  category_ids, names = load_categories(source, config)
  pipeline = pipelines.for_config(config)
  print(f'predict: {len(files)} images in batches of {model.batch_size} on '
        f'{mesh.devices.size} device(s); keeping scores >= {threshold}', flush=True)
  results = []
  index = 0
  for chunk, decoded, batch in _batches(files, pipeline, model.batch_size):
    dets = model(batch)
    for b, (f, image) in enumerate(zip(chunk, decoded)):  # padding rows are not read
      det = {k: v[b] for k, v in dets.items()}
      keep = det['valid'] & (det['scores'] >= threshold)
      masks = (paste_masks(det['masks'], det['boxes'], keep, image.shape[:2])
               if 'masks' in det else None)
      image_id = int(f.stem) if f.stem.isdigit() else index
      index += 1
      results += coco_results(image_id, det['boxes'], det['scores'], det['classes'],
                              category_ids, valid=keep, masks=masks, file_name=f.name)
      if not json_only:
        drawn = draw_detections(image, det['boxes'], det['scores'], det['classes'], names,
                                score_threshold=threshold, masks=masks, valid=keep)
        cv2.imwrite(str(output_dir / f'{f.stem}.jpg'), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f'predict: {index}/{len(files)} images, {len(results)} detections', flush=True)
  (output_dir / 'detections.json').write_text(json.dumps(results))
  print(f'predict: wrote {output_dir / "detections.json"}'
        + ('' if json_only else f' and {index} drawn images'), flush=True)
  return results


def config_line(source, given_spec, json_path, overrides: dict) -> str:
  """The one line saying which config predict (or export) uses."""
  if json_path is not None:
    what = f'{json_path} (the run\'s)'
    if given_spec:
      what += f'; --config={given_spec} not used'
  else:
    what = f'{given_spec} ({source} has no config.json)'
  from detx import workdir as wd
  extra = f' + overrides {wd.describe(overrides, 20)}' if overrides else ''
  return f'config: {what}{extra}'


def run_config_of(config, spec: str, directory) -> tuple:
  """(config, line) for detx.main --mode=predict: DIRECTORY's config.json with the
  command line's overrides of `config` (its file `spec`) on top, else `config`."""
  from detx import cli, run_config
  path = Path(directory).expanduser() / 'config.json'
  overrides = cli.file_changes(config, spec)
  if not path.is_file():
    return config, config_line(directory, spec, None, overrides)
  from detx import config as cfg
  try:
    merged = cfg.override(run_config.get_config(str(path)),
                          {k: run_config.as_tuples(v) for k, (_, v) in overrides.items()})
  except (KeyError, AttributeError, TypeError) as e:
    raise ConfigError(f'an override does not fit {path} (the run\'s config): '
                      f'{" ".join(str(e).split())[:200]}') from None
  return merged, config_line(directory, spec, path, overrides)


def parse_with_run_config(argv, source, flag_values) -> tuple:
  """cli.parse of argv with --config replaced by SOURCE/config.json when there is one:
  (the config, the one line saying which config is used)."""
  from ml_collections import config_flags
  from detx import cli, run_config
  argv, given, json_path = run_config.with_run_config(argv, source)
  if json_path is None and not given:
    raise UserError(f'{source} has no config.json: give --config=configs/<name>.py')
  cli.parse(argv, flag_values)
  config = flag_values['config'].value
  spec = config_flags.get_config_filename(flag_values['config'])
  return config, config_line(source, given, json_path, cli.file_changes(config, spec))


def main(argv):
  import os
  from detx import checkpoint, run_config
  exported = run_config.flag_value(argv[1:], 'exported')
  ckpt = run_config.flag_value(argv[1:], 'checkpoint')
  if not exported and not ckpt:
    config, line = parse_pretrained(argv, FLAGS)
  else:
    if exported and not exported_dir(exported):
      raise PathError(f'--exported {exported}: no inference/manifest.json there '
                      '(python -m detx.export --format=inference writes one)')
    if not exported:
      checkpoint.find(ckpt)  # before parsing the config: a missing checkpoint is one line
    source = exported_dir(exported) if exported else (exported_dir(ckpt) or run_dir(ckpt))
    config, line = parse_with_run_config(argv, source, FLAGS)
  print(f'predict: {line}', flush=True)
  for flag in ('input', 'output'):
    if not getattr(FLAGS, flag):
      raise UserError(f'--{flag} is required')
  if config.compile_cache:  # as detx.main: JAX's persistent compilation cache
    import jax
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(config.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  run(config, ckpt, FLAGS.input, FLAGS.output, FLAGS.threshold, FLAGS.json_only,
      FLAGS.batch_size, exported)


def parse_pretrained(argv, flag_values) -> tuple:
  """No checkpoint: (--config's config, its line), for --config.model.pretrained=WEIGHTS
  (the model's initial variables filled from them, as training's model.pretrained)."""
  from ml_collections import config_flags
  from detx import cli, run_config
  if not run_config.flag_value(argv[1:], 'config.model.pretrained'):
    raise UserError('--checkpoint=WORKDIR (or --exported=DIR, or --config=NAME with '
                    '--config.model.pretrained=WEIGHTS) is required')
  if not run_config.flag_value(argv[1:], 'config'):
    raise UserError('--config.model.pretrained needs --config=configs/<name>.py')
  cli.parse(argv, flag_values)
  config = flag_values['config'].value
  spec = config_flags.get_config_filename(flag_values['config'])
  return config, f'{spec} with model.pretrained={config.model.pretrained} (no checkpoint)'


def define_flags(flag_values, what: str):
  """predict's flags (export's too: --config, --debug) in their own FlagValues, so
  that detx.main's flags in absl's global ones do not mix with them in-process."""
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'configs/<name>.py; default: the run\'s '
                                  'config.json.', flag_values=flag_values)
  flags.DEFINE_bool('debug', False, 'Show the traceback of a user mistake (or DETX_DEBUG=1).',
                    flag_values=flag_values)
  if what != 'predict':
    return flag_values
  define = lambda kind, name, default, text: getattr(flags, f'DEFINE_{kind}')(
      name, default, text, flag_values=flag_values)
  define('string', 'checkpoint', None, 'Workdir, checkpoints/ dir, step dir or a '
         'detx.export directory.')
  define('string', 'exported', None, 'A detx.export --format=inference directory.')
  define('string', 'input', None, 'An image or a directory of images.')
  define('string', 'output', None, 'Where detections.json and drawn images go.')
  define('float', 'threshold', None, 'Keep scores >= this (default 0.5; 0 with --json_only).')
  define('bool', 'json_only', False, 'Write detections.json only (no drawn images).')
  define('integer', 'batch_size', 0, 'Images per step (default eval.batch_size).')
  return flag_values


FLAGS = None


def cli_run(argv) -> int:
  """`python -m detx.predict ARGS` in-process (argv[0] is the program): the exit code,
  0 or 2 after a user mistake's one line (detx.errors.guard)."""
  global FLAGS
  from absl import flags
  from detx import errors
  if FLAGS is None:
    FLAGS = define_flags(flags.FlagValues(), 'predict')
  argv = list(argv)
  if any(a.lstrip('-') in ('help', 'h', 'helpfull') for a in argv[1:]):
    print(__doc__ + '\n' + FLAGS.get_help())
    return 0
  return errors.guard(lambda: main(argv), argv)


if __name__ == '__main__':
  import sys
  sys.exit(cli_run(sys.argv))
