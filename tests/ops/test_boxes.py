import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import (box_area, box_clip_size, box_iou, clip_boxes, cxcywh_to_xyxy, decode_boxes,
                      encode_boxes, xyxy_to_cxcywh)


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def _random_boxes(rng, n, scale=100.0):
  xy = rng.uniform(0, scale, (n, 2))
  wh = rng.uniform(0.05 * scale, 0.5 * scale, (n, 2))
  return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def _bbox_overlaps_reference(a, b):
  """Paddle's BboxOverlaps (+1 pixel convention), written out with numpy loops."""
  out = np.zeros((len(a), len(b)), np.float64)
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      area_p = (p[2] - p[0] + 1) * (p[3] - p[1] + 1)
      area_q = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
      iw = max(min(p[2], q[2]) - max(p[0], q[0]) + 1, 0)
      ih = max(min(p[3], q[3]) - max(p[1], q[1]) + 1, 0)
      inter = iw * ih
      out[i, j] = 0 if inter == 0 else inter / (area_p + area_q - inter)
  return out


def test_box_iou_known_values():
  a = jnp.array([[0., 0., 10., 10.], [0., 0., 2., 2.]])
  b = jnp.array([[5., 0., 15., 10.], [20., 20., 30., 30.], [0., 0., 10., 10.]])
  np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1], [0, 0, 4 / 100]], rtol=1e-6)
  # legacy: 11 x 11 pixel boxes sharing a 6 x 11 strip.
  np.testing.assert_allclose(box_iou(a, b, legacy=True)[0], [66 / (121 + 121 - 66), 0, 1], rtol=1e-6)
  np.testing.assert_allclose(box_area(a), [100, 4])
  np.testing.assert_allclose(box_area(a, legacy=True), [121, 9])


def test_box_iou_batched_and_legacy_reference():
  rng = np.random.default_rng(0)
  a = np.stack([_random_boxes(rng, 5), _random_boxes(rng, 5)])
  b = np.stack([_random_boxes(rng, 7), _random_boxes(rng, 7)])
  got = jax.jit(box_iou, static_argnums=2)(jnp.asarray(a), jnp.asarray(b), True)
  assert got.shape == (2, 5, 7)
  for k in range(2):
    np.testing.assert_allclose(got[k], _bbox_overlaps_reference(a[k], b[k]), rtol=1e-5, atol=1e-6)


def test_box_iou_degenerate_is_zero_and_differentiable():
  a = jnp.zeros((2, 4))
  iou, grad = jax.value_and_grad(lambda x: box_iou(x, x).sum())(a)
  assert np.all(np.asarray(iou) == 0)
  assert np.all(np.isfinite(grad))


def test_cxcywh_round_trip():
  boxes = jnp.array([[1., 2., 5., 10.], [-3., 0., 3., 4.]])
  np.testing.assert_allclose(xyxy_to_cxcywh(boxes), [[3, 6, 4, 8], [0, 2, 6, 4]])
  np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_clip_boxes():
  boxes = jnp.array([[-5., 3., 700., 500.], [10., -1., 20., 30.]])
  np.testing.assert_allclose(clip_boxes(boxes, (480, 640)), [[0, 3, 639, 479], [10, 0, 20, 30]])
  np.testing.assert_allclose(clip_boxes(boxes, jnp.array([480, 640]), legacy=False),
                             [[0, 3, 640, 480], [10, 0, 20, 30]])
  per_image = clip_boxes(jnp.stack([boxes, boxes]), jnp.array([[480, 640], [20, 15]])[:, None, :])
  np.testing.assert_allclose(per_image[1], [[0, 3, 14, 19], [10, 0, 14, 19]])


# Paddle's box_clip op (paddle 3 still registers the fluid kernel; it reads the boxes'
# LoD, so it runs in a legacy static program, in a subprocess: the flag has to precede
# the import and static mode is global).
_PADDLE_BOX_CLIP = """
import os, sys, json
os.environ['FLAGS_enable_pir_api'] = '0'
import numpy as np, paddle
from paddle.base.layer_helper import LayerHelper
paddle.enable_static()
args = json.load(sys.stdin)
main, start = paddle.static.Program(), paddle.static.Program()
with paddle.static.program_guard(main, start):
  x = paddle.static.data('x', [-1, 4], 'float32', lod_level=1)
  info = paddle.static.data('info', [-1, 3], 'float32')
  helper = LayerHelper('box_clip')
  out = helper.create_variable_for_type_inference('float32')
  helper.append_op(type='box_clip', inputs={'Input': x, 'ImInfo': info}, outputs={'Output': out})
core = paddle.base.core
t = core.DenseTensor() if hasattr(core, 'DenseTensor') else core.LoDTensor()
t.set(np.asarray(args['boxes'], np.float32), paddle.CPUPlace())
t.set_lod([args['lod']])
res = paddle.static.Executor(paddle.CPUPlace()).run(
    main, feed={'x': t, 'info': np.asarray(args['im_info'], np.float32)}, fetch_list=[out],
    return_numpy=False)[0]
print(json.dumps(np.asarray(res).tolist()))
"""


def _paddle_box_clip(boxes, lod, info):
  import json
  import subprocess
  import sys
  r = subprocess.run([sys.executable, '-c', _PADDLE_BOX_CLIP], capture_output=True, text=True,
                     input=json.dumps({'boxes': boxes.tolist(), 'lod': lod,
                                       'im_info': info.tolist()}), timeout=120)
  if 'No module named' in r.stderr and 'paddle' in r.stderr:
    pytest.skip('paddlepaddle is not installed')
  assert r.returncode == 0, f'paddle box_clip failed: {r.stderr[-300:]}'
  return np.asarray(json.loads(r.stdout.strip().splitlines()[-1]), np.float32)


def _box_clip_formula(boxes, info):
  """Paddle's ClipTiledBoxes (bbox_util.h) with is_scale and pixel_offset, as written:
  im_w = round(im_info[1] / im_info[2]), im_h = round(im_info[0] / im_info[2]) (C++
  round: halves away from zero), every x in [0, im_w - 1], every y in [0, im_h - 1]."""
  h, w, s = (np.float32(v) for v in info)
  im_w = np.float32(math.floor(np.float32(w / s) + 0.5))
  im_h = np.float32(math.floor(np.float32(h / s) + 0.5))
  out = boxes.copy()
  out[:, 0::2] = np.maximum(np.minimum(boxes[:, 0::2], im_w - 1), 0)
  out[:, 1::2] = np.maximum(np.minimum(boxes[:, 1::2], im_h - 1), 0)
  return out


def test_box_clip_size_matches_paddle_box_clip():
  # Padded eval im_info (PaddleDetection's FasterRCNNEvalFeed, use_padded_im_info):
  # 480 x 640 at scale 800 / 480 -> 800 x 1067 resized, 800 x 1088 padded to 32, so
  # box_clip keeps x up to round(1088 / 1.6667) - 1 = 652, past the image's 639.
  info = np.array([[800.0, 1088.0, 800.0 / 480.0], [384.0, 512.0, 0.25], [320.0, 352.0, 0.8],
                   [100.0, 101.0, 2.0]], np.float32)  # 50 x 50.5: the half rounds up
  rng = np.random.default_rng(0)
  lod = [0, 5, 9, 12, 16]
  boxes = rng.uniform(-100, 1200, (16, 4)).astype(np.float32)
  hw = box_clip_size(jnp.asarray(info))
  np.testing.assert_array_equal(hw, [[480, 653], [1536, 2048], [400, 440], [50, 51]])
  got = np.concatenate([clip_boxes(jnp.asarray(boxes[a:b]), hw[i]) for i, (a, b) in
                        enumerate(zip(lod[:-1], lod[1:]))])
  want = np.concatenate([_box_clip_formula(boxes[a:b], info[i]) for i, (a, b) in
                         enumerate(zip(lod[:-1], lod[1:]))])
  np.testing.assert_array_equal(got, want)
  pytest.importorskip('paddle')
  np.testing.assert_array_equal(got, _paddle_box_clip(boxes, lod, info))


def test_encode_matches_box_to_delta_and_round_trips():
  rng = np.random.default_rng(1)
  ref, tgt = _random_boxes(rng, 20), _random_boxes(rng, 20)
  var = (0.1, 0.1, 0.2, 0.2)
  d = encode_boxes(jnp.asarray(ref), jnp.asarray(tgt), var)
  # Paddle's BoxToDelta: centres x1 + w / 2 with w = x2 - x1 + 1.
  rw, rh = ref[:, 2] - ref[:, 0] + 1, ref[:, 3] - ref[:, 1] + 1
  tw, th = tgt[:, 2] - tgt[:, 0] + 1, tgt[:, 3] - tgt[:, 1] + 1
  want = np.stack([(tgt[:, 0] + tw / 2 - ref[:, 0] - rw / 2) / rw / 0.1,
                   (tgt[:, 1] + th / 2 - ref[:, 1] - rh / 2) / rh / 0.1,
                   np.log(tw / rw) / 0.2, np.log(th / rh) / 0.2], -1)
  np.testing.assert_allclose(d, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(encode_boxes(jnp.asarray(ref), jnp.asarray(ref)), 0, atol=1e-6)
  for legacy in (True, False):
    d = encode_boxes(jnp.asarray(ref), jnp.asarray(tgt), var, legacy=legacy)
    np.testing.assert_allclose(decode_boxes(jnp.asarray(ref), d, var, legacy=legacy), tgt,
                               rtol=1e-5, atol=1e-3)


def test_decode_clamps_scale():
  ref = jnp.array([[0., 0., 15., 15.]])
  big = jnp.array([[0., 0., 10., 10.]])
  out = decode_boxes(ref, big)
  np.testing.assert_allclose(out[0, 2] - out[0, 0] + 1, 1000.0, rtol=1e-4)
  unclamped = decode_boxes(ref, big, clip=None)
  np.testing.assert_allclose(unclamped[0, 2] - unclamped[0, 0] + 1, 16 * math.exp(10), rtol=1e-4)


@pytest.mark.parametrize('normalized', [False, True])
def test_box_coder_parity(paddle, normalized):
  rng = np.random.default_rng(2)
  scale = 1.0 if normalized else 100.0
  prior, target = _random_boxes(rng, 6, scale), _random_boxes(rng, 5, scale)
  var = [0.1, 0.1, 0.2, 0.2]
  want = paddle.vision.ops.box_coder(paddle.to_tensor(prior), var, paddle.to_tensor(target),
                                     'encode_center_size', box_normalized=normalized).numpy()
  got = encode_boxes(jnp.asarray(prior)[None], jnp.asarray(target)[:, None], var,
                     legacy=not normalized, box_coder_centre=True)
  assert got.shape == want.shape == (5, 6, 4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

  deltas = rng.normal(0, 1, (5, 6, 4)).astype(np.float32)
  want = paddle.vision.ops.box_coder(paddle.to_tensor(prior), var, paddle.to_tensor(deltas),
                                     'decode_center_size', box_normalized=normalized,
                                     axis=0).numpy()
  got = decode_boxes(jnp.asarray(prior)[None], jnp.asarray(deltas), var, legacy=not normalized,
                     clip=None)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * scale)
