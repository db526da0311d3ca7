import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import fpn_levels, multilevel_roi_align, roi_align


@pytest.fixture
def paddle():
  return pytest.importorskip('paddle')


def _random_rois(rng, n, lo, hi, min_wh=1.0, max_wh=80.0):
  xy = rng.uniform(lo, hi, (n, 2))
  wh = rng.uniform(min_wh, max_wh, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _batch_ids(counts):
  return np.repeat(np.arange(len(counts)), counts).astype(np.int32)


def _paddle_roi_align(paddle, feats, rois, counts, out, scale, ratio, aligned):
  x = paddle.to_tensor(np.ascontiguousarray(feats.transpose(0, 3, 1, 2)))
  y = paddle.vision.ops.roi_align(x, paddle.to_tensor(rois),
                                  paddle.to_tensor(np.asarray(counts, np.int32)), out, scale,
                                  ratio, aligned)
  return y.numpy().transpose(0, 2, 3, 1)


def test_linear_ramp_gives_sample_means():
  # Bilinear interpolation of f(y, x) = x is exact, so each bin is the mean x of its
  # samples: the bin centre (2 x 2 samples at 1/4 and 3/4 of the bin).
  w = 32
  feats = jnp.broadcast_to(jnp.arange(w, dtype=jnp.float32)[None, None, :, None], (1, 16, w, 2))
  rois = jnp.array([[8.0, 4.0, 40.0, 20.0]])  # scale 0.5 -> x in [4, 20], y in [2, 10]
  out = roi_align(feats, rois, jnp.zeros((1,), jnp.int32), (2, 4), 0.5, 2)
  assert out.shape == (1, 2, 4, 2)
  np.testing.assert_allclose(out[0, 0, :, 0], [6.0, 10.0, 14.0, 18.0], rtol=1e-6)
  np.testing.assert_allclose(out[0, 1], out[0, 0])


def test_samples_outside_the_map_count_as_zero():
  feats = jnp.ones((1, 8, 8, 1))
  # x from -4 to 4 in feature pixels, one bin, 2 samples per axis: x = -2 (< -1, zero) and 2.
  out = roi_align(feats, jnp.array([[-4.0, 0.0, 4.0, 4.0]]), jnp.zeros((1,), jnp.int32), 1,
                  1.0, 2)
  np.testing.assert_allclose(out[0, 0, 0, 0], 0.5)


PARITY = [  # sampling_ratio, aligned
    (2, False), (0, False), (3, False), (2, True), (0, True),
]


@pytest.mark.parametrize('method', ['gather', 'matmul'])
@pytest.mark.parametrize('ratio,aligned', PARITY)
def test_parity(paddle, ratio, aligned, method):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(2, 13, 17, 5)).astype(np.float32)
  rois = _random_rois(rng, 40, -40, 140)  # stride 8: many cross the border
  rois[:3] = [[0, 0, 0, 0], [-30, -30, -5, -5], [100, 90, 300, 200]]
  if aligned and ratio == 0:
    rois[0] = [0, 0, 4, 4]  # Paddle's empty aligned RoI has 0 samples -> NaN
  counts = [17, 23]
  want = _paddle_roi_align(paddle, feats, rois, counts, (7, 6), 0.125, ratio, aligned)
  fn = jax.jit(roi_align, static_argnames=('output_size', 'spatial_scale', 'sampling_ratio',
                                           'aligned', 'max_sampling_ratio', 'method'))
  got = fn(jnp.asarray(feats), jnp.asarray(rois), jnp.asarray(_batch_ids(counts)),
           output_size=(7, 6), spatial_scale=0.125, sampling_ratio=ratio, aligned=aligned,
           max_sampling_ratio=8 if ratio == 0 else None, method=method)
  assert got.shape == (40, 7, 6, 5)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.parametrize('method', ['gather', 'matmul'])
def test_adaptive_default_grid_covers_rois_inside_the_map(paddle, method):
  rng = np.random.default_rng(1)
  feats = rng.normal(size=(1, 12, 20, 3)).astype(np.float32)  # a 192 x 320 input at 1/16
  rois = _random_rois(rng, 30, 0, 150, 2, 180)
  rois = np.minimum(rois, [319, 191, 319, 191]).astype(np.float32)  # clipped like proposals
  want = _paddle_roi_align(paddle, feats, rois, [30], 5, 1 / 16, 0, False)
  got = roi_align(jnp.asarray(feats), jnp.asarray(rois), jnp.zeros((30,), jnp.int32), 5,
                  1 / 16, 0, method=method)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_methods_agree_with_gradients():
  rng = np.random.default_rng(2)
  feats = jnp.asarray(rng.normal(size=(2, 10, 12, 4)), jnp.float32)
  rois = jnp.asarray(_random_rois(rng, 8, -10, 80, 2, 60))
  batch = jnp.asarray([0, 1] * 4, jnp.int32)
  cot = jnp.asarray(rng.normal(size=(8, 3, 3, 4)), jnp.float32)

  def loss(f, method):
    return jnp.sum(roi_align(f, rois, batch, 3, 0.125, 0, method=method) * cot)

  ga = jax.grad(loss)(feats, 'gather')
  gm = jax.grad(loss)(feats, 'matmul')
  assert np.all(np.isfinite(ga)) and float(jnp.abs(ga).sum()) > 0
  np.testing.assert_allclose(ga, gm, atol=1e-5)


def _level_rois(rng, n):
  # sqrt(area) from 8 to ~600, spread over levels 2-5, all inside a 512 x 640 image.
  side = np.exp(rng.uniform(np.log(8), np.log(600), n))
  aspect = np.exp(rng.uniform(-0.4, 0.4, n))
  w = np.minimum(side * aspect, 639)
  h = np.minimum(side / aspect, 511)
  x1 = rng.uniform(0, 1, n) * (639 - w)
  y1 = rng.uniform(0, 1, n) * (511 - h)
  return np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)


def test_fpn_levels_formula():
  rois = jnp.array([[0, 0, 223, 223], [0, 0, 111, 111], [0, 0, 447, 447], [0, 0, 110, 110],
                    [0, 0, 10, 10], [0, 0, 2000, 2000], [5, 5, 4, 4]], jnp.float32)
  np.testing.assert_array_equal(fpn_levels(rois), [4, 3, 5, 2, 2, 5, 2])


def test_fpn_levels_parity(paddle):
  rng = np.random.default_rng(3)
  rois = _level_rois(rng, 300)
  counts = np.array([120, 180], np.int32)
  multi, _, nums = paddle.vision.ops.distribute_fpn_proposals(
      paddle.to_tensor(rois), 2, 5, 4, 224, pixel_offset=True,
      rois_num=paddle.to_tensor(counts))
  levels = np.asarray(fpn_levels(jnp.asarray(rois)))
  assert len(set(levels.tolist())) == 4
  batch = _batch_ids(counts)
  for k, lvl in enumerate(range(2, 6)):
    # Paddle lists each level's RoIs image by image, each in input order.
    sel = np.flatnonzero(levels == lvl)
    np.testing.assert_array_equal(rois[sel], multi[k].numpy())
    np.testing.assert_array_equal([np.sum(batch[sel] == i) for i in range(2)], nums[k].numpy())


@pytest.mark.parametrize('method', ['gather', 'matmul'])
@pytest.mark.parametrize('ratio', [2, 0])
def test_multilevel_matches_single_level(paddle, method, ratio):
  rng = np.random.default_rng(4)
  n, c = 2, 3
  feats = {lvl: rng.normal(size=(n, 512 >> lvl, 640 >> lvl, c)).astype(np.float32)
           for lvl in range(2, 6)}
  rois = _level_rois(rng, 48)
  batch = np.asarray(rng.integers(0, n, 48), np.int32)
  levels = fpn_levels(jnp.asarray(rois))
  got = multilevel_roi_align({k: jnp.asarray(v) for k, v in feats.items()}, jnp.asarray(rois),
                             jnp.asarray(batch), levels, 7, ratio, method=method)
  assert got.shape == (48, 7, 7, c)
  levels = np.asarray(levels)
  for lvl in range(2, 6):
    sel = np.flatnonzero(levels == lvl)
    order = sel[np.argsort(batch[sel], kind='stable')]  # paddle wants RoIs grouped by image
    counts = [int(np.sum(batch[sel] == i)) for i in range(n)]
    want = _paddle_roi_align(paddle, feats[lvl], rois[order], counts, (7, 7), 2.0 ** -lvl,
                             ratio, False)
    np.testing.assert_allclose(np.asarray(got)[order], want, atol=1e-4)
  # A list (first entry = level 2) works the same.
  again = multilevel_roi_align([jnp.asarray(feats[k]) for k in range(2, 6)], jnp.asarray(rois),
                               jnp.asarray(batch), jnp.asarray(levels), 7, ratio, method=method)
  np.testing.assert_allclose(again, got, atol=1e-6)
