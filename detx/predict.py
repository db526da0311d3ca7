r"""Inference on images: draws the detections and writes a COCO results JSON.

  python -m detx.predict --config=configs/quickstart.py --checkpoint=/tmp/quickstart \
      --input=IMAGE_OR_DIR --output=/tmp/pred

Works for every family: each image goes through its input pipeline's eval transform.
--checkpoint takes a workdir, its checkpoints/ directory or one step directory.
Writes OUTPUT/<image name>.jpg (detections with score >= --draw_threshold drawn, masks
blended in for mask models) and OUTPUT/detections.json (COCO results: image_id,
category_id, bbox xywh, score, file_name, and for mask models the segmentation as RLE
with counts as str; pycocotools' COCO.loadRes reads it). image_id is the file name's
number (COCO names) or the image's index in the input.
"""
import json
from pathlib import Path

import cv2
import numpy as np

from detx.errors import PathError

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


def load_categories(workdir, config):
  """(original category ids, names) saved by training, else numbered classes."""
  path = Path(workdir) / 'categories.json'
  if path.is_file():
    cats = json.loads(path.read_text())
    return [c['id'] for c in cats], [c['name'] for c in cats]
  n = config.model.num_classes
  return list(range(1, n + 1)), [f'class {i}' for i in range(n)]


def run(config, checkpoint_path, input_path, output_dir, draw_threshold: float = 0.5) -> list[dict]:
  """Predicts every image of `input_path`; returns the COCO results it writes."""
  import jax
  from detx import evaluation, sharding
  from detx.data import images, pipelines
  from detx.evaluation.results import coco_results
  from detx.models.base import family, model_inputs
  from detx.ops.masks import paste_masks
  from detx.visualize import draw_detections

  from detx import checkpoint
  checkpoint.find(checkpoint_path)  # a missing checkpoint is refused before the model is built
  files = list_images(input_path)
  output_dir = Path(output_dir).expanduser()
  output_dir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  module, state = evaluation.restore_state(config, checkpoint_path, mesh)
  variables = state.variables()
  workdir = Path(checkpoint_path).expanduser().resolve()
  while workdir.name.isdigit() or workdir.name == 'checkpoints':
    workdir = workdir.parent
  category_ids, names = load_categories(workdir, config)
  eval_step = evaluation.make_eval_step(module, mesh)
  pipeline = pipelines.for_config(config)
  has_masks = family(config).has_masks
  n_dev = mesh.devices.size
  results = []
  for i, f in enumerate(files):
    image = images.decode_image(f.read_bytes(), str(f))
    batch = pipeline.eval_batch([image] * n_dev)  # one image per device: same shapes
    dets = jax.device_get(eval_step(variables, sharding.shard_batch(
        model_inputs(module, batch, False), mesh)))
    det = {k: v[0] for k, v in dets.items()}
    keep = det['valid']
    masks = (paste_masks(det['masks'], det['boxes'], keep, image.shape[:2])
             if has_masks else None)
    image_id = int(f.stem) if f.stem.isdigit() else i
    results += coco_results(image_id, det['boxes'], det['scores'], det['classes'],
                            category_ids, valid=keep, masks=masks, file_name=f.name)
    drawn = draw_detections(image, det['boxes'], det['scores'], det['classes'], names,
                            score_threshold=draw_threshold, masks=masks, valid=keep)
    cv2.imwrite(str(output_dir / f'{f.stem}.jpg'), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    shown = int((det['scores'][keep] >= draw_threshold).sum())
    print(f'{f.name}: {shown} detections >= {draw_threshold}', flush=True)
  (output_dir / 'detections.json').write_text(json.dumps(results))
  return results


def main(argv):
  del argv
  config = _CONFIG.value
  if config.compile_cache:  # as detx.main: JAX's persistent compilation cache
    import os
    import jax
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(config.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  run(config, _CHECKPOINT.value, _INPUT.value, _OUTPUT.value, _THRESHOLD.value)


if __name__ == '__main__':
  import sys
  from absl import app, flags
  from ml_collections import config_flags
  from detx import cli, errors
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.')
  _CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Workdir, checkpoints/ dir or step dir.')
  _INPUT = flags.DEFINE_string('input', None, 'An image or a directory of images.')
  _OUTPUT = flags.DEFINE_string('output', None, 'Where drawn images and detections.json go.')
  _THRESHOLD = flags.DEFINE_float('draw_threshold', 0.5, 'Score threshold for drawing.')
  flags.DEFINE_bool('debug', False, 'Show the traceback of a user mistake (or DETX_DEBUG=1).')
  flags.mark_flags_as_required(['config', 'checkpoint', 'input', 'output'])
  app.define_help_flags()
  # One line and exit code 2 for a user mistake, as detx.main (detx.errors.guard).
  sys.exit(errors.guard(lambda: main(cli.parse(sys.argv)), sys.argv))
