import json

import cv2
import numpy as np

from detx import predict, train
from tests.helpers import tiny_config


def test_predict_writes_drawn_images_and_coco_results(tmp_path):
  c = tiny_config(tmp_path, steps=2)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(c, str(workdir), do_eval=False)
  images = tmp_path / 'in'
  images.mkdir()
  for f in sorted((tmp_path / 'shapes' / 'val2017').iterdir())[:2]:
    (images / f.name).write_bytes(f.read_bytes())
  # A grayscale PNG too: predict converts it.
  cv2.imwrite(str(images / 'gray.png'), np.full((50, 70), 128, np.uint8))
  c.model.conf_thresh = 0.0
  c.model.nms.score_threshold = 0.0   # untrained: keep every candidate
  out = tmp_path / 'out'
  results = predict.run(c, str(workdir / 'checkpoints'), str(images), str(out), draw_threshold=0.0)
  names = sorted(p.name for p in out.iterdir())
  assert names == sorted([f.stem + '.jpg' for f in images.iterdir()] + ['detections.json'])
  assert json.loads((out / 'detections.json').read_text()) == json.loads(json.dumps(results))
  gray = [r for r in results if r['file_name'] == 'gray.png']
  assert gray and all(0 <= r['bbox'][0] <= 70 and r['bbox'][2] > 0 for r in gray)
  cats = {r['category_id'] for r in results}
  assert cats <= {cat['id'] for cat in json.loads((workdir / 'categories.json').read_text())}
  drawn = cv2.imread(str(out / 'gray.jpg'))
  assert drawn.shape == (50, 70, 3)
