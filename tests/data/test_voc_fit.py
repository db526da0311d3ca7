"""Slow tier: yolov3_mobilenet_v1_voc (128-pixel input) and ssd_mobilenet_v1_voc (300x300,
as configured) fit 8 voc_tiny trainval images from random init, read through the VOC
builder and scored by eval.metric='voc' (11-point mAP) on the same images."""
import os

import pytest

from detx import config as cfg
from detx import train
from tests.data.test_voc import VOC_TINY

# Eight voc_tiny trainval images whose objects are none difficult, at most three per
# image, each at least 15% of the image's longer side (visible at a 128-pixel input; the
# narrowest, 0.21 of its width, is 63 px wide at SSD's 300 x 300, its smallest prior 60):
# motorbike, person x2, cat, bird x2, cat + tvmonitor, tvmonitor, dog x2 + person,
# diningtable.
FIT_IMAGES = ('000000008193', '000000188417', '000000286720', '000000425988',
              '000000417802', '000000483328', '000000524291', '000000245760')

# The SSD fit: RMSProp at the config's lr 1e-3 (10 warmup steps) with the 120e schedule of a
# 150-step run (x0.5 at 54, then 80, 107, 134), stopped at step 60. In that 150-step run
# (eval every 30): mAP 0.18 at step 30, 1.0 at step 60 (train loss 5.46 at 10, 0.77 at 50,
# 0.16 at 60: the drop at 54 settles it).
SSD_STEPS, SSD_LR, SSD_WARMUP = 60, 1e-3, 10
SSD_MILESTONES = (54, 80, 107, 134)


def voc_subset(src, dst, stems, name='fit'):
  """DST/VOCdevkit/VOC2007 with src's Annotations and JPEGImages (symlinked) and one
  list ImageSets/Main/<name>.txt of `stems`: the split 'voc2007_<name>'."""
  base = dst / 'VOCdevkit' / 'VOC2007'
  (base / 'ImageSets' / 'Main').mkdir(parents=True)
  for sub in ('Annotations', 'JPEGImages'):
    os.symlink(src / 'VOCdevkit' / 'VOC2007' / sub, base / sub)
  (base / 'ImageSets' / 'Main' / f'{name}.txt').write_text('\n'.join(stems) + '\n')
  return dst


def _fit(name, data_dir, cache_dir, steps, lr, warmup):
  """Config `name`, random init (no download), trained on FIT_IMAGES (batch 8, augment
  off) and evaluated on them."""
  c = cfg.load(name)
  c.model.pretrained = ''  # random init: no ImageNet download
  c.data.update(dir=str(data_dir), cache_dir=str(cache_dir), train_split='voc2007_fit',
                augment='none', num_workers=0)
  c.eval.update(split='voc2007_fit', batch_size=8)  # the images it trained on
  c.train.update(batch_size=8, steps=steps, log_every=50, checkpoint_every=1000)
  c.optim.base_lr = lr
  c.optim.schedule.warmup_steps = warmup
  return c


def fit_config(data_dir, cache_dir, steps=90):
  """90 steps (lr x0.1 at 71 and 80): mAP 1.0, as 120 steps read; 70 steps read 0.75,
  too near the floor."""
  c = _fit('yolov3_mobilenet_v1_voc', data_dir, cache_dir, steps, 0.01, 20)
  c.data.update(mixup_epochs=0, max_size=128, train_sizes=(608,))
  return c


def ssd_fit_config(data_dir, cache_dir, steps=SSD_STEPS):
  """ssd_mobilenet_v1_voc as configured (300x300, its pipeline, RMSProp, the 120e lr
  values, backbone convs at lr x0.1), the boundaries SSD_MILESTONES."""
  c = _fit('ssd_mobilenet_v1_voc', data_dir, cache_dir, steps, SSD_LR, SSD_WARMUP)
  c.optim.schedule.milestones = SSD_MILESTONES
  return c


@pytest.mark.slow
def test_yolov3_mobilenet_v1_voc_fits_8_voc_images(tmp_path):
  if not (VOC_TINY / 'VOCdevkit/VOC2007').is_dir():
    pytest.skip(f'real test data not found at {VOC_TINY}')
  data = voc_subset(VOC_TINY, tmp_path / 'voc8', FIT_IMAGES)
  result = train.train_and_evaluate(fit_config(data, tmp_path / 'tfds'), str(tmp_path / 'run'))
  assert result['voc/mAP'] >= 0.7, result


@pytest.mark.slow
def test_ssd_mobilenet_v1_voc_fits_8_voc_images(tmp_path):
  if not (VOC_TINY / 'VOCdevkit/VOC2007').is_dir():
    pytest.skip(f'real test data not found at {VOC_TINY}')
  data = voc_subset(VOC_TINY, tmp_path / 'voc8', FIT_IMAGES)
  c = ssd_fit_config(data, tmp_path / 'tfds')
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['voc/mAP'] >= 0.7, result
