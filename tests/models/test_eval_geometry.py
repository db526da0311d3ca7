"""Paddle's evaluation geometry on bucketed batches (detx.models.extent; issue 17, item 4).

Paddle evaluated R-CNN C4 on the unpadded image and R-CNN FPN padded to a multiple of
32. With eval.geometry='paddle', a batch padded into a larger shared bucket must give, on
each image's extent, the features and RPN outputs of that run, and the same detections
(no anchor in the padding). The reference is detx's own forward on Paddle's input shape
(the image alone, or padded to 32), where no masking takes effect; random weights with
norm and bias parameters perturbed, so norms shift the padding away from zero.
"""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from detx import config as cfg
from detx.errors import ConfigError
from detx.models import extent
from detx.models.backbones import resnet
from detx.models.base import build_model
from detx.models.heads.retina import RetinaHead
from detx.models.necks.fpn import FPN
from tests.helpers import compiled

SHALLOW = {50: (1, 1, 1, 1)}
BUCKET = (96, 128)
HW = ((29, 45), (50, 70))  # the resized images of the batch (FPN: 32x64 and 64x96 in Paddle)


def _model(name, geometry, monkeypatch):
  for depth, blocks in SHALLOW.items():
    monkeypatch.setitem(resnet.BLOCKS, depth, blocks)
  c = cfg.load(name)
  c.data.max_size = 128
  c.model.rpn.update(test_pre_nms_top_n=128, test_post_nms_top_n=8, test_collect_top_n=8)
  c.model.nms.update(keep_top_k=20, score_threshold=0.0)
  c.eval.geometry = geometry
  return build_model(c)[0]


def _variables(module):
  return compiled(lambda x: _variables_of(module.init(jax.random.key(0), x,
                                                       method=type(module).init_params)),
                   jnp.zeros((1, 64, 64, 3)))


def _variables_of(v):
  """v with every parameter but the conv kernels perturbed (norms shift the padding)."""
  flat = flax.traverse_util.flatten_dict(v)
  keys = jax.random.split(jax.random.key(1), len(flat))
  return flax.traverse_util.unflatten_dict(
      {p: x if p[-1] == 'kernel' else x + 0.2 * jax.random.normal(k, x.shape)
       for (p, x), k in zip(flat.items(), keys)})


def _batch():
  rng = np.random.default_rng(0)
  image = np.zeros((len(HW),) + BUCKET + (3,), np.float32)
  for i, (h, w) in enumerate(HW):
    image[i, :h, :w] = rng.normal(size=(h, w, 3))
  return {'image': jnp.asarray(image), 'image_hw': jnp.asarray(HW, jnp.int32),
          'scale': jnp.full((len(HW),), 0.5, jnp.float32),
          'orig_size': jnp.asarray(HW, jnp.int32) * 2}


def _run(module, variables, batch):
  """Detections and the maps the RPN reads ({level: [B, H, W, C]}) and its outputs."""
  def run(v, b):
    dets, state = module.apply(v, b, False, capture_intermediates=True,
                               mutable=['intermediates'])
    inter = state['intermediates']
    maps = inter['neck' if module.fpn else 'backbone']['__call__'][0]
    return dets, maps, inter['rpn']['__call__'][0]
  return compiled(run, variables, batch)


def _paddle_input(batch, i, pad):
  """Image i alone, as Paddle fed it: its own size, rounded up to `pad` when pad > 0."""
  h, w = HW[i]
  if pad:
    h, w = -(-h // pad) * pad, -(-w // pad) * pad
  return {'image': batch['image'][i:i + 1, :h, :w], 'image_hw': batch['image_hw'][i:i + 1],
          'scale': batch['scale'][i:i + 1], 'orig_size': batch['orig_size'][i:i + 1]}


class _Tiny(nn.Module):
  """A vd stem, max-pool, three bottlenecks (levels 2-4, the vd avg-pool shortcut on 3
  and 4), an FPN on them (P5 subsampled) and a RetinaHead on the FPN levels."""

  @nn.compact
  def __call__(self, x):
    x = resnet.max_pool_3x3_s2(resnet.ConvNorm(8, 3, 2, name='conv1_1')(extent.mask(x)))
    feats = {}
    for lvl in (2, 3, 4):
      x = resnet.Bottleneck(16, 1 if lvl == 2 else 2, lvl == 2, 'd', width=4,
                            name=f'res{lvl}a')(x)
      feats[lvl] = x
    outs = FPN(8, 2, 5)(feats)
    head = RetinaHead(3, 2, ml_collections.FrozenConfigDict(
        {'num_convs': 2, 'channels': 8, 'prior_prob': 0.01}))
    return outs, head([outs[l] for l in sorted(outs)])


def test_masked_modules_equal_the_unpadded_run_on_the_extent(hw=((13, 21), (22, 17))):
  """Backbone blocks, FPN and the RetinaHead towers, on two images padded into a 40x48
  bucket under extent.active, against each image run alone (no padding)."""
  module = _Tiny()
  rng = np.random.default_rng(0)
  image = np.zeros((2, 40, 48, 3), np.float32)
  for i, (h, w) in enumerate(hw):
    image[i, :h, :w] = rng.normal(size=(h, w, 3))
  variables = compiled(lambda x: _variables_of(module.init(jax.random.key(0), x)),
                       jnp.asarray(image))

  def masked(v, x):
    with extent.active(jnp.asarray(hw), image.shape[1:3]):
      return module.apply(v, x)
  outs, head = compiled(masked, variables, jnp.asarray(image))
  plain_outs = compiled(module.apply, variables, jnp.asarray(image))[0]
  differs = []
  for i, (h, w) in enumerate(hw):
    ref_outs, ref_head = compiled(module.apply, variables, jnp.asarray(image[i:i + 1, :h, :w]))
    for lvl, ref in ref_outs.items():
      rh, rw = ref.shape[1:3]
      np.testing.assert_allclose(outs[lvl][i, :rh, :rw], ref[0], rtol=1e-5, atol=1e-5)
      differs.append(not np.allclose(plain_outs[lvl][i, :rh, :rw], ref[0], rtol=1e-5, atol=1e-5))
    for got, ref in zip(jax.tree.leaves(head), jax.tree.leaves(ref_head)):
      rh, rw = ref.shape[1:3]
      np.testing.assert_allclose(got[i, :rh, :rw], ref[0], rtol=1e-5, atol=1e-5)
  assert any(differs)  # without the mask, the padding reaches the image's border


@pytest.mark.slow
@pytest.mark.parametrize('name,pad', [('faster_rcnn_r50_vd_1x', 0), ('faster_rcnn_r50_fpn_1x', 32)])
def test_bucketed_forward_equals_paddle_input_on_the_extent(monkeypatch, name, pad):
  module = _model(name, 'paddle', monkeypatch)
  variables = _variables(module)
  batch = _batch()
  dets, maps, rpn = _run(module, variables, batch)
  differs = []
  bucket = _model(name, 'bucket', monkeypatch)
  bucket_maps = compiled(lambda v, x: bucket.apply(v, x, False,
                                                    method=lambda m, x, t: m.features(x, t)),
                          variables, batch['image'])
  for i in range(len(HW)):
    ref_dets, ref_maps, ref_rpn = _run(module, variables, _paddle_input(batch, i, pad))
    for lvl, ref in ref_maps.items():
      h, w = ref.shape[1:3]  # the extent at this level
      np.testing.assert_allclose(maps[lvl][i, :h, :w], ref[0], rtol=1e-4, atol=1e-4,
                                 err_msg=f'level {lvl}')
      outside = np.asarray(maps[lvl][i]).copy()
      outside[:h, :w] = 0
      assert not np.any(outside)
      differs.append(not np.allclose(bucket_maps[lvl][i, :h, :w], ref[0], rtol=1e-4, atol=1e-4))
    for (logits, deltas), (ref_logits, ref_deltas) in zip(rpn, ref_rpn):
      h, w = ref_logits.shape[1:3]
      np.testing.assert_allclose(logits[i, :h, :w], ref_logits[0], rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(deltas[i, :h, :w], ref_deltas[0], rtol=1e-4, atol=1e-4)
    assert int(ref_dets['valid'].sum()) > 0
    for key in ('valid', 'classes', 'boxes', 'scores'):
      np.testing.assert_allclose(np.asarray(dets[key][i]), np.asarray(ref_dets[key][0]),
                                 rtol=1e-4, atol=1e-3, err_msg=key)
  # The bucketed mode reads the padding: its border features are not Paddle's.
  assert any(differs)


def test_geometry_key_defaults_to_paddle_and_rejects_others():
  c = cfg.load('faster_rcnn_r50_fpn_1x')
  assert extent.geometry(c) == 'paddle'
  assert cfg.load('retinanet_r50_fpn_1x').eval.geometry == 'paddle'
  c.eval.geometry = 'padded'
  with pytest.raises(ConfigError, match='eval.geometry'):
    build_model(c)


def test_extent_at_each_stride_is_the_ceiling():
  """ceil(ceil(e / 2) / 2) ... = ceil(e / 2^k), for a bucket whose sizes halve unevenly."""
  e = jnp.asarray([[45, 61], [70, 100]], jnp.int32)
  with extent.active(e, (100, 130)):
    np.testing.assert_array_equal(extent.at((13, 17)), [[6, 8], [9, 13]])
    with pytest.raises(ValueError, match='stride-2'):
      extent.at((14, 17))
  assert extent.at((13, 17)) is None


@pytest.mark.parametrize('multilevel', [False, True])
def test_roi_align_valid_hw_equals_the_cropped_map(multilevel):
  """RoIAlign with valid_hw on a padded map equals RoIAlign on the map cropped to that
  size: its border clamp, and zero for samples past it (a RoI under one pixel wide at the
  border), whatever the padding holds."""
  from detx import ops
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.normal(size=(2, 12, 14, 3)), jnp.float32)
  valid = jnp.asarray([[5, 7], [9, 6]], jnp.int32)
  rois = jnp.asarray([[0, 0, 50, 40], [54, 20, 55, 35], [10, 70, 27, 79], [3, 3, 40, 20]],
                     jnp.float32)  # input pixels, stride 8: the 2nd and 3rd reach the border
  batch = jnp.asarray([0, 0, 1, 1], jnp.int32)
  for sr in (0, 2):
    if multilevel:
      got = ops.multilevel_roi_align({3: feats}, rois, batch, jnp.full((4,), 3), 4, sr,
                                     valid_hw=[valid])
    else:
      got = ops.roi_align(feats, rois, batch, 4, 1 / 8, sr, valid_hw=valid)
    for r in range(4):
      i = int(batch[r])
      h, w = (int(v) for v in valid[i])
      ref = ops.roi_align(feats[i:i + 1, :h, :w], rois[r:r + 1], jnp.zeros((1,), jnp.int32),
                          4, 1 / 8, sr)
      np.testing.assert_allclose(got[r], ref[0], rtol=1e-5, atol=1e-6)
    plain = ops.roi_align(feats, rois, batch, 4, 1 / 8, sr)
    assert not np.allclose(plain[1], got[1])
