"""Element-wise detection losses with Paddle's formulas: `smooth_l1`, `sigmoid_bce` and
`sigmoid_focal_loss`. Each returns the per-element loss; callers mask, sum and
normalise (the RPN, Fast R-CNN, RetinaNet, mask and YOLOv3 losses)."""
import jax
import jax.numpy as jnp


def smooth_l1(diff, sigma: float):
  """Paddle's smooth_l1 per element: 0.5 (sigma x)^2 if |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2."""
  s2 = sigma * sigma
  a = jnp.abs(diff)
  return jnp.where(a < 1.0 / s2, 0.5 * s2 * diff * diff, a - 0.5 / s2)


def sigmoid_bce(logits, labels):
  """Numerically stable sigmoid cross-entropy with (soft) labels, per element (Paddle's
  sigmoid_cross_entropy_with_logits): max(x, 0) - x * z + log(1 + exp(-|x|))."""
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def sigmoid_focal_loss(logits, labels, fg_num, gamma: float = 2.0, alpha: float = 0.25):
  """Paddle's `sigmoid_focal_loss` per element (the caller sums).

  logits [..., C]; labels [...] int: k in 1..C makes class k - 1 positive and the other
  classes negative, 0 makes every class negative, -1 ignores the row; fg_num (broadcast
  against labels) is the normaliser, floored at 1 as Paddle does. With p = sigmoid(x):
  positive -alpha (1 - p)^gamma log(p) / fg_num, negative -(1 - alpha) p^gamma
  log(1 - p) / fg_num, ignored 0. log p is computed stably (Paddle floors p at FLT_MIN,
  which differs only for logits below -87); the gradient is the analytic one, as
  Paddle's hand-written grad kernel.
  """
  x = logits.astype(jnp.float32)
  c = x.shape[-1]
  labels = labels.astype(jnp.int32)[..., None]
  pos = labels == jnp.arange(1, c + 1, dtype=jnp.int32)
  neg = (labels != -1) & ~pos
  p = jax.nn.sigmoid(x)
  term_pos = (1.0 - p) ** gamma * jax.nn.log_sigmoid(x)
  term_neg = p ** gamma * jax.nn.log_sigmoid(-x)
  norm = jnp.maximum(jnp.asarray(fg_num, jnp.float32), 1.0)[..., None]
  loss = jnp.where(pos, -alpha * term_pos, 0.0) + jnp.where(neg, -(1.0 - alpha) * term_neg, 0.0)
  return loss / norm
