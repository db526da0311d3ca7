"""Element-wise losses (detx.ops.losses): smooth_l1, sigmoid_bce, sigmoid_focal_loss.

Paddle 1.x's sigmoid_focal_loss op is not in paddlepaddle 3.x, so it is checked against a
loop-by-loop numpy transcription of its C++ kernel
(paddle/fluid/operators/detection/*), and against paddle 3's
`nn.functional.sigmoid_focal_loss`, forward and gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.ops import sigmoid_bce, sigmoid_focal_loss, smooth_l1

FLT_MIN = np.finfo(np.float32).tiny


# ------------------------------------------------------------------ sigmoid_focal_loss

def _focal_reference(x, labels, fg_num, gamma, alpha):
  """SigmoidFocalLossKernel and SigmoidFocalLossGradKernel (CPU), element by element."""
  x = np.asarray(x, np.float64)
  out, grad = np.zeros_like(x), np.zeros_like(x)
  fg = max(int(fg_num), 1)
  for a in range(x.shape[0]):
    g = labels[a]
    for d in range(x.shape[1]):
      v = x[a, d]
      c_pos = float(g == d + 1)
      c_neg = float(g != -1 and g != d + 1)
      p = 1.0 / (1.0 + np.exp(-v))
      log_1mp = -v * (v >= 0) - np.log(1.0 + np.exp(v - 2.0 * v * (v >= 0)))
      term_pos = (1 - p) ** gamma * np.log(max(p, FLT_MIN))
      term_neg = p ** gamma * log_1mp
      out[a, d] = -c_pos * term_pos * alpha / fg - c_neg * term_neg * (1 - alpha) / fg
      d_pos = (1 - p) ** gamma * (1 - p - p * gamma * np.log(max(p, FLT_MIN)))
      d_neg = p ** gamma * (log_1mp * (1 - p) * gamma - p)
      grad[a, d] = -c_pos * alpha / fg * d_pos - c_neg * (1 - alpha) / fg * d_neg
  return out, grad


def _focal_case(seed=0, rows=40, classes=6):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(rows, classes)) * 4).astype(np.float32)
  x[0, :3] = [-30.0, 30.0, 0.0]  # saturated logits
  labels = rng.integers(-1, classes + 1, rows).astype(np.int32)
  labels[:4] = [1, 0, -1, classes]
  return x, labels


@pytest.mark.parametrize('fg_num,gamma,alpha', [(7, 2.0, 0.25), (0, 2.0, 0.25), (3, 1.5, 0.4)])
def test_focal_loss_matches_the_kernel(fg_num, gamma, alpha):
  x, labels = _focal_case()
  want, want_grad = _focal_reference(x, labels, fg_num, gamma, alpha)
  got = sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(labels), fg_num, gamma, alpha)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  grad = jax.grad(lambda v: jnp.sum(sigmoid_focal_loss(v, jnp.asarray(labels), fg_num, gamma,
                                                       alpha)))(jnp.asarray(x))
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
  assert np.all(np.asarray(got)[labels == -1] == 0)


def test_focal_loss_per_row_normaliser():
  x, labels = _focal_case(1, rows=6)
  fg = np.array([1, 2, 3, 4, 5, 6])
  got = sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(labels), jnp.asarray(fg)[:, None][:, 0])
  for r in range(6):
    want, _ = _focal_reference(x[r:r + 1], labels[r:r + 1], fg[r], 2.0, 0.25)
    np.testing.assert_allclose(got[r], want[0], rtol=1e-5, atol=1e-7)


def test_focal_loss_parity_with_paddle():
  paddle = pytest.importorskip('paddle')
  import paddle.nn.functional as F
  x, labels = _focal_case(2)
  x[0, 2] = 0.25  # paddle 3's autograd of its composite loss is off at exactly 0
  keep = labels != -1  # Paddle 3 has no ignore label: drop those rows
  c = x.shape[1]
  one_hot = (labels[keep][:, None] == np.arange(1, c + 1)[None]).astype(np.float32)
  logit = paddle.to_tensor(x[keep], stop_gradient=False)
  loss = F.sigmoid_focal_loss(logit, paddle.to_tensor(one_hot),
                              normalizer=paddle.to_tensor([5.0]), alpha=0.25, gamma=2.0,
                              reduction='sum')
  loss.backward()
  fn = lambda v: jnp.sum(sigmoid_focal_loss(v, jnp.asarray(labels), 5))
  got, grad = jax.value_and_grad(fn)(jnp.asarray(x))
  np.testing.assert_allclose(float(got), float(loss.numpy()), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad)[keep], logit.grad.numpy(), rtol=1e-4, atol=1e-7)
  assert np.all(np.asarray(grad)[~keep] == 0)


# ------------------------------------------------------------- smooth_l1, sigmoid_bce

def test_smooth_l1_equals_numpy_transcription_of_paddle_formula():
  """smooth_l1 against a numpy transcription of Paddle's smooth_l1 kernel (paddle not run)."""
  x = jnp.array([-2.0, -0.1, 0.0, 0.05, 0.2, 1.0])
  s = 3.0
  want = np.where(np.abs(x) < 1 / s ** 2, 0.5 * (s * x) ** 2, np.abs(x) - 0.5 / s ** 2)
  np.testing.assert_allclose(smooth_l1(x, s), want, rtol=1e-6)


def test_sigmoid_bce_is_stable():
  np.testing.assert_allclose(sigmoid_bce(jnp.array([0.0, 100.0, -100.0]),
                                         jnp.array([1.0, 1.0, 1.0])),
                             [np.log(2), 0.0, 100.0], rtol=1e-6)
