"""A YOLOv3-DarkNet53 checkpoint written by PaddleDetection 2.6 gives detx's predict the
same detections as ppdet's own pipeline (issue 19, must-show).

tests/parity/ppdet_yolov3_pdparams.py (in the ppdet venv) builds ppdet's YOLOv3
(DarkNet(53) + YOLOv3FPN + YOLOv3Head, 80 classes) with random weights and arranges its
three 1x1 output convs so the detections are stable: the box channels are rescaled to
std 0.5 over the test images, every class weight is zeroed and each (level, anchor)
slot gets one class by bias (+8, the others -8), and the objectness is stretched so
that the threshold logit(0.01) sits in the middle of a gap >= 8 logits wide between
the anchors kept (top 2-6 per image) and the rest. It saves the state dict with
paddle.save (yolov3.pdparams) and runs ppdet's own Decode / Resize(320, cubic) /
NormalizeImage / Permute, the model, YOLOBox and MultiClassNMS (the zoo's thresholds)
on three coco_tiny val images.

detx side, in a subprocess: `python -m detx.predict --config=yolov3_darknet
--config.model.pretrained=yolov3.pdparams --json_only --config.eval.size=320` (the 2.x
names through detx.weights.ppdet2, no checkpoint) on the same images. Its
detections.json must hold, per image, the same detections: same count, same classes
(predict numbers them 1..80 without a categories.json), boxes (xyxy, from
detx's legacy xywh with w = x2 - x1 + 1) within 1e-3 of the largest coordinate,
scores within 1e-3.
"""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.parity.env import REPO, assert_close, run_ppdet

pytestmark = [pytest.mark.slow, pytest.mark.parity]

SIZE, NUM_IMAGES = 320, 3


def _cli(*args):
  proc = subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, f'{args[0]} failed:\n{proc.stderr[-3000:]}'
  return proc.stdout


def test_ppdet_yolov3_pdparams_predicts_as_ppdet(coco_tiny_dir, tmp_path):
  images = sorted((coco_tiny_dir / 'val2017').glob('*.jpg'))[:NUM_IMAGES]
  inputs = tmp_path / 'images'
  inputs.mkdir()
  for f in images:
    (inputs / f.name).symlink_to(f)
  out = run_ppdet('ppdet_yolov3_pdparams.py',
                  {'images': [str(f) for f in images], 'size': SIZE, 'seed': 0},
                  tmp_path / 'ppdet')
  pdparams = out / 'yolov3.pdparams'
  try:
    check_predict(tmp_path, images, inputs, out, pdparams)
  finally:  # 248 MB: not kept among pytest's tmp dirs
    pdparams.unlink(missing_ok=True)


def check_predict(tmp_path, images, inputs, out, pdparams):
  log = _cli('detx.predict', '--config=yolov3_darknet', f'--config.model.pretrained={pdparams}',
             f'--input={inputs}', f'--output={tmp_path / "pred"}', '--json_only',
             f'--config.eval.size={SIZE}', f'--batch_size={NUM_IMAGES}')
  loaded = re.search(r'loaded (\d+) of (\d+) variables', log)
  assert loaded and loaded[1] == loaded[2], log  # every array of the model from the file
  got = json.loads((tmp_path / 'pred' / 'detections.json').read_text())

  cat_ids = list(range(1, 81))  # no checkpoint, no categories.json: classes numbered
  want = np.load(out / 'dets.npz')
  total = 0
  for i, f in enumerate(images):
    ref = want[f'bbox{i}']                    # [K, 6]: class, score, x1, y1, x2, y2
    ref = ref[np.argsort(-ref[:, 1], kind='stable')]
    mine = sorted((d for d in got if d['file_name'] == f.name), key=lambda d: -d['score'])
    assert len(mine) == len(ref), f'{f.name}: detx {len(mine)} detections, ppdet {len(ref)}'
    assert [d['category_id'] for d in mine] == [cat_ids[int(c)] for c in ref[:, 0]], f.name
    boxes = np.array([[x, y, x + w - 1, y + h - 1] for x, y, w, h in
                      (d['bbox'] for d in mine)]).reshape(-1, 4)
    diff = assert_close(f'{f.name} boxes', boxes, ref[:, 2:], rel=1e-3)
    print(f'{f.name}: {len(ref)} detections, boxes max |detx - ppdet| / scale {diff:.2g}')
    np.testing.assert_allclose([d['score'] for d in mine], ref[:, 1], atol=1e-3)
    total += len(ref)
  assert total >= NUM_IMAGES, f'only {total} detections on {NUM_IMAGES} images'
