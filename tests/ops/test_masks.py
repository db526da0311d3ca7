"""Mask targets (GT crops resampled into RoIs) and the test-time paste (mask2out)."""
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops.masks import expand_boxes, mask_targets, paste_mask, paste_masks


def _targets(crop, gt_box, roi, res):
  out = mask_targets(jnp.asarray(crop)[None], jnp.asarray(gt_box, jnp.float32)[None],
                     jnp.asarray(roi, jnp.float32)[None], jnp.zeros((1,), jnp.int32), res)
  return np.asarray(out[0])


def test_roi_equal_to_gt_box_reproduces_the_crop():
  rng = np.random.default_rng(0)
  crop = (rng.uniform(size=(28, 28)) > 0.5).astype(np.uint8)
  box = [10.0, 20.0, 66.0, 48.0]
  np.testing.assert_array_equal(_targets(crop, box, box, 28), crop)


def test_half_boxes_and_outside():
  crop = np.zeros((16, 16), np.uint8)
  crop[:, :8] = 1  # left half of the GT box
  gt = [0.0, 0.0, 32.0, 32.0]
  np.testing.assert_array_equal(_targets(crop, gt, [0, 0, 16, 32], 8), np.ones((8, 8)))
  np.testing.assert_array_equal(_targets(crop, gt, [16, 0, 32, 32], 8), np.zeros((8, 8)))
  # A RoI twice the GT's size around it: the GT occupies the middle, its left half is set.
  t = _targets(np.ones((16, 16), np.uint8), gt, [-16, -16, 48, 48], 8)
  want = np.zeros((8, 8))
  want[2:6, 2:6] = 1
  np.testing.assert_array_equal(t, want)


def test_batched_and_matched_indices():
  crops = np.zeros((2, 3, 8, 8), np.uint8)
  crops[0, 1] = 1
  crops[1, 2, :4] = 1  # top half
  gt = np.tile(np.array([0, 0, 16, 16], np.float32), (2, 3, 1))
  rois = np.tile(np.array([0, 0, 16, 16], np.float32), (2, 2, 1))
  matched = np.array([[1, 0], [2, 2]], np.int32)
  t = np.asarray(mask_targets(jnp.asarray(crops), jnp.asarray(gt), jnp.asarray(rois),
                              jnp.asarray(matched), 4))
  assert t.shape == (2, 2, 4, 4)
  assert t[0, 0].all() and not t[0, 1].any()
  np.testing.assert_array_equal(t[1, 0], np.repeat([[1], [1], [0], [0]], 4, axis=1))


def test_expand_boxes():
  np.testing.assert_allclose(expand_boxes([[10, 20, 30, 60]], 1.5), [[5, 10, 35, 70]])


def test_paste_full_mask_covers_its_box():
  prob = np.ones((28, 28), np.float32)
  box = [10.0, 20.0, 49.0, 59.0]
  m = paste_mask(prob, box, (100, 120))
  assert m.shape == (100, 120) and m.dtype == np.uint8
  ys, xs = np.nonzero(m)
  # The (M + 2) / M expansion and the bilinear ramp at the zero border put the edge
  # within about a pixel of the box.
  assert abs(xs.min() - 10) <= 1 and abs(xs.max() - 49) <= 1
  assert abs(ys.min() - 20) <= 1 and abs(ys.max() - 59) <= 1


def test_paste_clips_to_the_image_and_handles_tiny_boxes():
  prob = np.ones((14, 14), np.float32)
  m = paste_mask(prob, [-20.0, 90.0, 30.0, 130.0], (100, 50))
  assert m[95:, :30].all() and not m[:85].any()
  tiny = paste_mask(prob, [5.0, 5.0, 5.0, 5.0], (10, 10))
  assert tiny.shape == (10, 10) and tiny.sum() <= 4


def test_paste_masks_rle():
  pycoco = pytest.importorskip('pycocotools.mask')
  probs = np.zeros((3, 28, 28), np.float32)
  probs[0, 7:21, 7:21] = 0.9
  probs[2] = 0.2  # below the threshold everywhere
  boxes = np.array([[0, 0, 27, 27], [1, 1, 5, 5], [0, 0, 10, 10]], np.float32)
  rles = paste_masks(probs, boxes, np.array([True, False, True]), (40, 30))
  assert rles[1] is None
  assert isinstance(rles[0]['counts'], str) and list(rles[0]['size']) == [40, 30]
  dec = pycoco.decode({'size': rles[0]['size'], 'counts': rles[0]['counts'].encode()})
  np.testing.assert_array_equal(dec, paste_mask(probs[0], boxes[0], (40, 30)))
  assert 120 < dec.sum() < 200  # about the central 14 x 14 (the border shrinks it a little)
  assert pycoco.decode({'size': rles[2]['size'], 'counts': rles[2]['counts'].encode()}).sum() == 0
