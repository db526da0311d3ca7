"""detx.models.inputs: the model's first op normalises a uint8 batch image (data.
image_dtype='uint8'), zeroing the R-CNN bucket padding, and passes a float one through;
every family reading the ImageNet-normalised pipelines (YOLOv3, the R-CNNs, RetinaNet)
feeds its backbone through it."""
import flax.linen as nn
import numpy as np
import pytest

from detx import config as cfg
from detx.data.transforms import normalize_image
from detx.models import inputs
from detx.models.base import build_model


def _uint8_batch(rng, n=2, h=8, w=12):
  image = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
  return dict(image=image, image_hw=np.array([[5, 12], [8, 7]], np.int32))


def test_normalize_matches_the_pipeline_and_zeroes_padding():
  batch = _uint8_batch(np.random.default_rng(0))
  out = np.asarray(inputs.batch_image(batch))
  assert out.dtype == np.float32
  for i, (h, w) in enumerate(batch['image_hw']):
    np.testing.assert_allclose(out[i, :h, :w], normalize_image(batch['image'][i, :h, :w]),
                               rtol=0, atol=1e-6)
    assert not out[i, h:].any() and not out[i, :, w:].any()
  without_hw = np.asarray(inputs.normalize(batch['image']))
  np.testing.assert_allclose(without_hw, normalize_image(batch['image']), rtol=0, atol=1e-6)
  floats = np.zeros((1, 4, 4, 3), np.float32) + 7
  assert inputs.normalize(floats, np.array([[1, 1]])) is floats  # the float path: untouched


class _Stop(Exception):
  pass


def _backbone_input(module, batch, method):
  """The image `module`'s `method` (its backbone entry) receives from __call__; the
  forward stops there (no parameters are read before it)."""
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == method and isinstance(context.module, type(module)):
      seen.append(np.asarray(args[0]))
      raise _Stop
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor), pytest.raises(_Stop):
    module.apply({}, batch, train=False)
  return seen[0]


@pytest.mark.parametrize('name,method', [
    ('yolov3_darknet', 'features'), ('faster_rcnn_r50_fpn_1x', 'features'),
    ('mask_rcnn_r50_fpn_1x', 'features'), ('cascade_rcnn_r50_fpn_1x', 'features'),
    ('retinanet_r50_fpn_1x', 'outputs')])
def test_every_family_normalises_a_uint8_batch(name, method):
  module, _ = build_model(cfg.load(name))
  batch = _uint8_batch(np.random.default_rng(1))
  if name.startswith('yolo'):
    del batch['image_hw']  # YOLO's square images have no padding
  got = _backbone_input(module, batch, method)
  np.testing.assert_array_equal(got, np.asarray(inputs.batch_image(batch)))
  floats = dict(batch, image=got)
  np.testing.assert_array_equal(_backbone_input(module, floats, method), got)
