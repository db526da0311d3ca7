"""Slow tier, `long`: the full pipeline fits real data (YOLOv3-DarkNet53 on 8 coco_tiny images)."""
import json
import os

import pytest

from detx import config as cfg
from detx import train

# Eight coco_tiny train images whose objects are all at least ~12% of the image's
# longer side (so they stay visible at a 128-pixel input) and none crowd.
OVERFIT_IMAGE_IDS = (24577, 57345, 114694, 180232, 188416, 286720, 294920, 425988)


def coco_subset(src, dst, image_ids, split='train'):
  """A COCO-format directory holding only `image_ids` of `src` (images symlinked)."""
  coco = json.loads((src / 'annotations' / f'instances_{split}2017.json').read_text())
  ids = set(image_ids)
  coco['images'] = [im for im in coco['images'] if im['id'] in ids]
  coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in ids]
  (dst / 'annotations').mkdir(parents=True)
  (dst / f'{split}2017').mkdir()
  (dst / 'annotations' / f'instances_{split}2017.json').write_text(json.dumps(coco))
  for im in coco['images']:
    os.symlink(src / f'{split}2017' / im['file_name'], dst / f'{split}2017' / im['file_name'])
  return dst


def fit_config(data_dir, cache_dir, steps=120):
  """120 steps (lr x0.1 at 96 and 108): AP50 0.91 (AP 0.81), where 200 read 0.96 at
  ~1.7x the time; at step 80 of the 120, before the decay, AP50 was 0.68."""
  c = cfg.load('yolov3_darknet')
  c.model.pretrained = ''  # random init: no ImageNet download
  c.data.dir = str(data_dir)
  c.data.cache_dir = str(cache_dir)
  c.eval.split = 'train'          # evaluated on the images it trained on
  c.data.augment = 'none'
  c.data.mixup_epochs = 0
  c.data.max_size = 128           # 608 -> 128 (anchors scale with it)
  c.data.train_sizes = (608,)
  c.data.num_workers = 0
  c.train.batch_size = 8
  c.train.steps = steps
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 8
  c.optim.base_lr = 0.01
  c.optim.schedule.warmup_steps = 20
  return c


@pytest.mark.slow
@pytest.mark.long  # ~4.3 min on CI (f4eb560); in CI YOLOv3 learns in the quickstart test
# (a narrow DarkNet) and yolov3_mobilenet_v1_voc's fit of real images
def test_yolov3_darknet53_overfits_8_coco_images(coco_tiny_dir, tmp_path):
  data = coco_subset(coco_tiny_dir, tmp_path / 'coco8', OVERFIT_IMAGE_IDS)
  result = train.train_and_evaluate(fit_config(data, tmp_path / 'tfds'), str(tmp_path / 'run'))
  assert result['bbox/AP50'] >= 0.8, result
