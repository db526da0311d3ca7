"""experiments/rehearsal.py's generated COCO-format set and detections (small), and
preparation killed midway (SIGKILL) on such a set: nothing half-written is taken for
complete, and the next preparation removes the leftovers and completes (slow)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detx.data import coco, loader
from experiments import rehearsal

ROOT = Path(__file__).resolve().parents[2]


def test_generated_set_is_consistent_coco(tmp_path):
  root = rehearsal.make_set(tmp_path, 4, size=(48, 64))
  ann = json.loads((root / 'annotations/instances_train2017.json').read_text())
  assert [im['id'] for im in ann['images']] == [1, 2, 3, 4]
  assert len(ann['categories']) == 80
  assert ann == rehearsal.annotations(4, size=(48, 64))  # a pure function of the index
  for a in ann['annotations']:
    poly = np.array(a['segmentation'][0]).reshape(-1, 2)
    x, y, w, h = a['bbox']
    assert np.allclose(poly.min(0), [x, y]) and np.allclose(poly.max(0), [x + w, y + h])
    assert 0 < a['area'] <= w * h and x + w <= 63 and y + h <= 47
  img = (root / 'train2017' / ann['images'][0]['file_name']).read_bytes()
  assert img[:2] == b'\xff\xd8'
  ids, boxes, scores, classes = rehearsal.detections(ann, per_image=20)
  assert boxes.shape == (4, 20, 4) and scores.shape == classes.shape == (4, 20)
  assert (boxes[..., 2:] >= boxes[..., :2] - 1).all() and classes.max() < 80
  # The first detections of an image are its ground truth, jittered.
  first = next(a for a in ann['annotations'] if a['image_id'] == 1)
  x, y, w, h = first['bbox']
  assert np.abs(boxes[0, 0] - [x, y, x + w - 1, y + h - 1]).max() < 0.6 * max(w, h)


def _prepared_records(builder) -> list:
  src = coco.data_source(builder)
  return [(int(r['image_id']), bytes(r['image'])) for r in src.__getitems__(range(len(src)))]


@pytest.mark.slow
def test_preparation_killed_midway_restarts_cleanly(tmp_path):
  """A child prepares 300 640x480 images; SIGKILL once the spool file (the examples
  tfds will shard) is partly written. The split is not prepared, the temporary
  directory is left; preparing again removes it and writes every image, in id order,
  byte for byte the source files."""
  n = 300
  data_dir = rehearsal.make_set(tmp_path / 'gen', n)
  cache = tmp_path / 'tfds'
  code = (f'from detx.data import loader; '
          f'loader.Dataset({str(data_dir)!r}, "train", cache_dir={str(cache)!r})')
  proc = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  try:
    while time.time() < deadline and proc.poll() is None:
      spools = list(cache.glob('detx_coco/*/incomplete.*/detx_spool_*.tmp'))
      if spools and spools[0].stat().st_size > 2_000_000:
        break
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, f'finished before the kill ({proc.returncode})'
  builder = coco.make_builder(data_dir, 'train', str(cache))
  assert not builder.is_prepared()
  stale = list(cache.glob('detx_coco/*/incomplete.*'))
  assert stale, 'the kill left no temporary directory: not killed midway'
  ds = loader.Dataset(data_dir, 'train', cache_dir=str(cache))
  assert ds.num_images == n and not any(p.exists() for p in stale)
  records = _prepared_records(coco.make_builder(data_dir, 'train', str(cache)))
  assert [i for i, _ in records] == list(range(1, n + 1))
  for i, data in records[::37]:
    assert data == (data_dir / 'train2017' / f'{i:012d}.jpg').read_bytes()
