import numpy as np
import pytest

from detx import config as cfg
from detx import schedules


def test_270e_at_reference_length():
  c = cfg.load('yolov3_darknet')
  lr = schedules.learning_rate(0.001, c.optim.schedule, 500200)
  assert float(lr(0)) == pytest.approx(0.0)
  assert float(lr(2000)) == pytest.approx(0.0005)
  assert float(lr(4000)) == pytest.approx(0.001)
  assert float(lr(399999)) == pytest.approx(0.001)
  assert float(lr(400000)) == pytest.approx(0.0001)
  assert float(lr(450000)) == pytest.approx(0.00001)


def test_schedule_scales_with_steps_unless_explicit():
  s = schedules.schedule_config('1x')
  assert schedules.resolve(s, 9000) == (50, (6000, 8000))
  s.milestones = (100, 200)
  s.warmup_steps = 7
  assert schedules.resolve(s, 9000) == (7, (100, 200))


def test_every_preset_is_monotone_after_warmup():
  for name in schedules.PRESETS:
    s = schedules.schedule_config(name)
    lr = schedules.learning_rate(0.01, s, 1000)
    warm, _ = schedules.resolve(s, 1000)
    vals = np.array([float(lr(i)) for i in range(warm, 1000, 10)])
    assert np.all(np.diff(vals) <= 1e-12), name
