r"""Inference on images: draws the detections and writes a COCO results JSON.

  python -m detx.predict --config=configs/quickstart.py --checkpoint=/tmp/quickstart \
      --input=IMAGE_OR_DIR --output=/tmp/pred

--checkpoint takes a workdir, its checkpoints/ directory or one step directory.
Writes OUTPUT/<image name>.jpg (boxes with score >= --draw_threshold drawn) and
OUTPUT/detections.json (COCO results: image_id, category_id, bbox xywh, score, file_name).
"""
import json
from pathlib import Path

import cv2
import jax
import numpy as np

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def list_images(path) -> list[Path]:
  path = Path(path).expanduser()
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  elif path.is_file():
    files = [path]
  else:
    raise FileNotFoundError(f'--input {path} is neither an image nor a directory')
  if not files:
    raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
  return files


def load_categories(workdir, config):
  """(original category ids, names) saved by training, else numbered classes."""
  path = Path(workdir) / 'categories.json'
  if path.is_file():
    cats = json.loads(path.read_text())
    return [c['id'] for c in cats], [c['name'] for c in cats]
  n = config.model.num_classes
  return list(range(1, n + 1)), [f'class {i}' for i in range(n)]


def to_coco_results(image_id, file_name, boxes, scores, classes, category_ids) -> list[dict]:
  """Paddle's bbox2out: xyxy (legacy +1) -> COCO xywh with w = x2 - x1 + 1."""
  out = []
  for b, s, c in zip(boxes, scores, classes):
    out.append({'image_id': image_id, 'file_name': file_name,
                'category_id': int(category_ids[int(c)]),
                'bbox': [float(b[0]), float(b[1]), float(b[2] - b[0] + 1), float(b[3] - b[1] + 1)],
                'score': float(s)})
  return out


def run(config, checkpoint_path, input_path, output_dir, draw_threshold: float = 0.5) -> list[dict]:
  from detx import checkpoint, sharding, train
  from detx.data import coco, loader, transforms
  from detx.models import build_model
  from detx.visualize import draw_detections

  files = list_images(input_path)
  output_dir = Path(output_dir).expanduser()
  output_dir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  module, rules = build_model(config)
  tx, _ = train.make_optimizer(config, rules)
  state = train.init_state(config, module, tx, mesh)
  import flax
  state = flax.serialization.from_state_dict(
      state, checkpoint.restore_variables(checkpoint_path, state.as_dict()))
  workdir = Path(checkpoint_path).expanduser().resolve()
  while workdir.name.isdigit() or workdir.name == 'checkpoints':
    workdir = workdir.parent
  category_ids, names = load_categories(workdir, config)
  eval_step = train.make_eval_step(module, mesh)
  size = loader.eval_size(config)
  n_dev = mesh.devices.size
  results = []
  for i, f in enumerate(files):
    image = coco.decode_image(f.read_bytes(), str(f))
    example = {'image': image, 'image_id': i, 'boxes': np.zeros((0, 4), np.float32),
               'labels': np.zeros((0,), np.int32), 'is_crowd': np.zeros((0,), bool)}
    elem = transforms.yolo_eval(example, size, config.data.max_boxes)
    batch = {k: np.stack([v] * n_dev) for k, v in train.model_inputs(module, elem, False).items()}
    dets = jax.device_get(eval_step(state.variables(), sharding.shard_batch(batch, mesh)))
    keep = dets['valid'][0]
    boxes, scores, classes = dets['boxes'][0][keep], dets['scores'][0][keep], dets['classes'][0][keep]
    image_id = int(f.stem) if f.stem.isdigit() else i
    results += to_coco_results(image_id, f.name, boxes, scores, classes, category_ids)
    drawn = draw_detections(image, boxes, scores, classes, names, score_threshold=draw_threshold)
    cv2.imwrite(str(output_dir / f'{f.stem}.jpg'), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f'{f.name}: {int((scores >= draw_threshold).sum())} detections >= {draw_threshold}')
  (output_dir / 'detections.json').write_text(json.dumps(results))
  return results


def main(argv):
  del argv
  run(_CONFIG.value, _CHECKPOINT.value, _INPUT.value, _OUTPUT.value, _THRESHOLD.value)


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.')
  _CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Workdir, checkpoints/ dir or step dir.')
  _INPUT = flags.DEFINE_string('input', None, 'An image or a directory of images.')
  _OUTPUT = flags.DEFINE_string('output', None, 'Where drawn images and detections.json go.')
  _THRESHOLD = flags.DEFINE_float('draw_threshold', 0.5, 'Score threshold for drawing.')
  flags.mark_flags_as_required(['config', 'checkpoint', 'input', 'output'])
  app.run(main)
