"""RoIAlign on NHWC feature maps with Paddle 1.x semantics, single level and FPN.

Sampling follows Paddle's CPU `roi_align` kernel (Detectron's RoIAlign):
- the RoI is (x1, y1, x2, y2) * spatial_scale, minus 0.5 when aligned=True; without
  `aligned` its width and height are at least 1 (no half-pixel offset: Paddle 1.x);
- each of the oh x ow bins is sampled on a gh x gw grid at the bin's fractional
  positions (i + 0.5) / g, where g = sampling_ratio, or ceil(roi_h / oh) (and
  ceil(roi_w / ow)) when sampling_ratio <= 0 (adaptive);
- a sample with y < -1, y > H, x < -1 or x > W contributes 0; otherwise y, x are
  clamped at 0 and at H - 1, W - 1, and the value is bilinear;
- the bin value is the mean of its g_h * g_w samples (out-of-map samples count).

Static shapes: the adaptive grid size depends on the RoI, so samples are laid out on
a fixed max grid and the unused ones get weight 0. The max grid defaults to
ceil(H / oh) x ceil(W / ow), which covers every RoI inside the feature map (proposals
clipped to the image always are); pass `max_sampling_ratio` for larger RoIs, whose
grid is otherwise capped there. That cap, and one sample (not Paddle's 0, which gives
NaN) for an empty aligned RoI, are the only departures from Paddle.

Bilinear interpolation and the validity test are separable in y and x, so each RoI is
described by per-axis (index, weight) pairs: 2 taps per sample along each axis, with
the 1 / g mean and the validity folded into the weights. Two evaluations share them:
- 'gather' reads the [oh, 2 g_h] x [ow, 2 g_w] taps of each RoI with one gather and
  takes their weighted sum: R * 4 oh ow g_h g_w * C values (about 0.8 GB for 1024 RoIs,
  7 x 7, g = 2, 256 channels, unless XLA fuses the gather into the sum); right for a
  fixed small sampling_ratio (FPN: 2);
- 'matmul' turns the taps into dense interpolation matrices Wy [oh, H], Wx [ow, W]
  and computes Wy . F . Wx^T with two matmuls (float32, HIGHEST precision); its cost
  does not grow with the grid, which suits adaptive sampling on C4 features (large
  RoIs, 14 x 14 output: XLA:CPU plans 2.8 GB of temporaries for 512 RoIs on a
  50 x 84 x 1024 map, against 37 GB for 'gather' with its 4 x 4 max grid).
Both give the same numbers up to float summation order. Interpolation runs in
float32 (or wider) and the result is cast back to the features' dtype.
"""
import math
from typing import Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

Size = Union[int, Tuple[int, int]]
_HIGHEST = lax.Precision.HIGHEST


def _size2(v: Size) -> Tuple[int, int]:
  if isinstance(v, int):
    return v, v
  a, b = v
  return int(a), int(b)


def _axis_taps(start, extent, n_out: int, grid, max_grid: int, size):
  """Sample taps along one axis for R RoIs.

  start, extent: [R] RoI start and extent in feature pixels; grid: [R] int32 samples
  per bin (1..max_grid); size: [R] int32 feature extent (H or W of the RoI's level).
  Returns index [R, n_out, 2 * max_grid] int32 and weight [R, n_out, 2 * max_grid]:
  taps (low, high) of each sample; weights include 1 / grid, zero for samples beyond
  `grid` or outside [-1, size].
  """
  dtype = start.dtype
  bin_size = extent / n_out
  p = jnp.arange(n_out, dtype=dtype)[None, :, None]
  i = jnp.arange(max_grid, dtype=dtype)[None, None, :]
  g = grid.astype(dtype)[:, None, None]
  coord = start[:, None, None] + bin_size[:, None, None] * (p + (i + 0.5) / g)  # [R, n, G]
  fsize = size.astype(dtype)[:, None, None]
  isize = size[:, None, None]
  valid = (i < g) & (coord >= -1.0) & (coord <= fsize)
  coord = jnp.maximum(coord, 0.0)
  low = jnp.floor(coord).astype(jnp.int32)
  edge = low >= isize - 1
  low = jnp.where(edge, isize - 1, low)
  high = jnp.where(edge, isize - 1, low + 1)
  frac = jnp.where(edge, 0.0, coord - low.astype(dtype))
  scale = jnp.where(valid, 1.0 / g, 0.0)
  index = jnp.stack([low, high], -1).reshape(coord.shape[0], n_out, 2 * max_grid)
  weight = jnp.stack([(1.0 - frac) * scale, frac * scale], -1).reshape(index.shape)
  return index, weight.astype(dtype)


def _roi_geometry(rois, spatial_scale, aligned: bool):
  off = 0.5 if aligned else 0.0
  x1 = rois[:, 0] * spatial_scale - off
  y1 = rois[:, 1] * spatial_scale - off
  rw = rois[:, 2] * spatial_scale - off - x1
  rh = rois[:, 3] * spatial_scale - off - y1
  if not aligned:
    rw = jnp.maximum(rw, 1.0)
    rh = jnp.maximum(rh, 1.0)
  return x1, y1, rw, rh


def _grids(rh, rw, oh: int, ow: int, sampling_ratio: int, max_h: int, max_w: int):
  if sampling_ratio > 0:
    gh = jnp.full(rh.shape, sampling_ratio, jnp.int32)
    gw = jnp.full(rw.shape, sampling_ratio, jnp.int32)
  else:
    # Paddle computes ceil(roi / out) in float; at least 1 sample (Paddle would divide
    # by zero for an empty aligned RoI).
    gh = jnp.clip(jnp.ceil(rh / oh), 1, max_h).astype(jnp.int32)
    gw = jnp.clip(jnp.ceil(rw / ow), 1, max_w).astype(jnp.int32)
  return gh, gw


def _max_grid(sampling_ratio: int, max_sampling_ratio, sizes_h, sizes_w, oh: int, ow: int):
  if sampling_ratio > 0:
    return sampling_ratio, sampling_ratio
  if max_sampling_ratio is not None:
    mh, mw = _size2(max_sampling_ratio)
    return mh, mw
  return (max(1, max(math.ceil(h / oh) for h in sizes_h)),
          max(1, max(math.ceil(w / ow) for w in sizes_w)))


def _pool_gather(flat, base, row_stride, yi, wy, xi, wx):
  """flat [M, C]; base, row_stride [R]; yi, wy [R, oh, Ty]; xi, wx [R, ow, Tx]."""
  idx = (base[:, None, None, None, None] +
         yi[:, :, :, None, None] * row_stride[:, None, None, None, None] +
         xi[:, None, None, :, :])  # [R, oh, Ty, ow, Tx]
  w = wy[:, :, :, None, None] * wx[:, None, None, :, :]
  vals = jnp.take(flat, idx, axis=0)  # [R, oh, Ty, ow, Tx, C]
  return jnp.sum(vals * w[..., None], axis=(2, 4))


def _interp_matrix(index, weight, size: int):
  """Dense [R, n, size] interpolation matrix from taps [R, n, T]."""
  one_hot = (index[..., None] == jnp.arange(size)[None, None, None, :]).astype(weight.dtype)
  return jnp.sum(one_hot * weight[..., None], axis=2)


def _pool_matmul(features, roi_batch, yi, wy, xi, wx):
  """features [N, H, W, C] -> [R, oh, ow, C] with Wy . F[b] . Wx^T per RoI.

  The image is selected by folding a one-hot of roi_batch into the first matrix. The
  contraction order is the one with the smaller intermediate: [R, oh, W, C] (rows
  first, image selected there) or [R, ow, N, H, C] (columns first).
  """
  n, h, w, _ = features.shape
  my = _interp_matrix(yi, wy, h)  # [R, oh, H]
  mx = _interp_matrix(xi, wx, w)  # [R, ow, W]
  sel = jax.nn.one_hot(roi_batch, n, dtype=my.dtype)  # [R, N]
  my = my[:, :, None, :] * sel[:, None, :, None]  # [R, oh, N, H]
  oh, ow = my.shape[1], mx.shape[1]
  if oh * w <= ow * n * h:
    rows = jnp.einsum('rpnh,nhwc->rpwc', my, features, precision=_HIGHEST)
    return jnp.einsum('rqw,rpwc->rpqc', mx, rows, precision=_HIGHEST)
  cols = jnp.einsum('rqw,nhwc->rqnhc', mx, features, precision=_HIGHEST)
  return jnp.einsum('rpnh,rqnhc->rpqc', my, cols, precision=_HIGHEST)


def _check_method(method: str, sampling_ratio: int) -> str:
  if method == 'auto':
    return 'gather' if sampling_ratio > 0 else 'matmul'
  if method not in ('gather', 'matmul'):
    raise ValueError(f"method must be 'auto', 'gather' or 'matmul', got {method!r}")
  return method


def _tap_sizes(hs, ws, valid_hw, roi_batch):
  """The map size each RoI's samples see: its map's (hs, ws), or its image's valid_hw."""
  if valid_hw is None:
    return hs, ws
  v = jnp.asarray(valid_hw, jnp.int32)[roi_batch]
  return v[:, 0], v[:, 1]


def roi_align(features, rois, roi_batch, output_size: Size, spatial_scale: float,
              sampling_ratio: int, aligned: bool = False,
              max_sampling_ratio: Optional[Size] = None, method: str = 'auto',
              valid_hw=None):
  """RoIAlign of rois [R, 4] (x1, y1, x2, y2, input-image pixels) on features [N, H, W, C].

  roi_batch [R] int: the image of each RoI. output_size: int or (oh, ow).
  spatial_scale: feature / input size (1/16 for C4). sampling_ratio <= 0 is adaptive
  (see the module doc for the static max grid, `max_sampling_ratio`). aligned=False is
  Paddle 1.x / PaddleDetection 2019; aligned=True adds the half-pixel offset.
  method: 'gather', 'matmul' or 'auto' (gather for a fixed sampling_ratio, matmul for
  adaptive). valid_hw [N, 2] int: each image's map size (rows, cols) when its map is the
  top-left part of the padded features: samples see a map of that size (its border
  clamp, zero beyond it), as on the unpadded image. Returns [R, oh, ow, C] in features'
  dtype; padded RoIs give
  well-defined values that the caller masks. Gradients flow to the features only,
  not to the RoI coordinates (as in Paddle).
  """
  oh, ow = _size2(output_size)
  n, h, w, c = features.shape
  method = _check_method(method, sampling_ratio)
  dtype = features.dtype
  rois = lax.stop_gradient(rois.astype(jnp.float32))
  roi_batch = roi_batch.astype(jnp.int32)
  max_h, max_w = _max_grid(sampling_ratio, max_sampling_ratio, [h], [w], oh, ow)
  x1, y1, rw, rh = _roi_geometry(rois, spatial_scale, aligned)
  gh, gw = _grids(rh, rw, oh, ow, sampling_ratio, max_h, max_w)
  r = rois.shape[0]
  hs = jnp.full((r,), h, jnp.int32)
  ws = jnp.full((r,), w, jnp.int32)
  th, tw = _tap_sizes(hs, ws, valid_hw, roi_batch)
  yi, wy = _axis_taps(y1, rh, oh, gh, max_h, th)
  xi, wx = _axis_taps(x1, rw, ow, gw, max_w, tw)
  if method == 'matmul':
    return _pool_matmul(features, roi_batch, yi, wy, xi, wx).astype(dtype)
  flat = features.reshape(n * h * w, c)
  base = roi_batch * (h * w)
  return _pool_gather(flat, base, ws, yi, wy, xi, wx).astype(dtype)


def fpn_levels(rois, min_level: int = 2, max_level: int = 5, canonical_level: int = 4,
               canonical_size: int = 224, legacy: bool = True, eps: float = 1e-6):
  """FPN level of each RoI [..., 4], as Paddle's `distribute_fpn_proposals`.

  level = floor(log2(sqrt(area) / canonical_size + eps) + canonical_level), clipped to
  [min_level, max_level]; area uses the +1 pixel width when legacy (pixel_offset) and
  is 0 for boxes with x2 < x1 or y2 < y1. eps = 1e-6 is current Paddle; the 2019
  kernel had no eps (they differ only when sqrt(area) / canonical_size lands within
  1e-6 below a power of two). Returns int32 [...].
  """
  off = 1.0 if legacy else 0.0
  rois = rois.astype(jnp.float32)
  bw = rois[..., 2] - rois[..., 0]
  bh = rois[..., 3] - rois[..., 1]
  area = jnp.where((bw < 0) | (bh < 0), 0.0, (bw + off) * (bh + off))
  level = jnp.floor(jnp.log2(jnp.sqrt(area) / canonical_size + eps) + canonical_level)
  return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def _level_list(features_by_level, min_level: int):
  if isinstance(features_by_level, Mapping):
    keys = sorted(features_by_level)
    if keys != list(range(keys[0], keys[0] + len(keys))):
      raise ValueError(f'levels must be consecutive, got {keys}')
    return keys[0], [features_by_level[k] for k in keys]
  return min_level, list(features_by_level)


def multilevel_roi_align(features_by_level, rois, roi_batch, levels, output_size: Size,
                         sampling_ratio: int, spatial_scales: Optional[Sequence[float]] = None,
                         min_level: int = 2, aligned: bool = False,
                         max_sampling_ratio: Optional[Size] = None, method: str = 'auto',
                         valid_hw=None):
  """FPN RoIAlign: each RoI pooled from its own level (PaddleDetection's FPNRoIAlign).

  features_by_level: {level: [N, H_l, W_l, C]} or a sequence whose first entry is
  `min_level`. levels [R] int: the level of each RoI (e.g. `fpn_levels(rois)`), clipped
  to the levels given. spatial_scales: per level, in the same order; default
  1 / 2^level. valid_hw: per level (same order) [N, 2], or None. Other arguments as
  `roi_align`.

  'gather' (the default for sampling_ratio > 0) pools every RoI from its own level in
  one gather over the levels' concatenated pixels: the cost is that of a single
  level. 'matmul' runs each level's matmuls with the other levels' RoIs weighted 0.
  Returns [R, oh, ow, C], in the order of rois.
  """
  oh, ow = _size2(output_size)
  first, feats = _level_list(features_by_level, min_level)
  num = len(feats)
  if spatial_scales is None:
    spatial_scales = [2.0 ** -(first + i) for i in range(num)]
  if len(spatial_scales) != num:
    raise ValueError(f'{len(spatial_scales)} spatial_scales for {num} levels')
  method = _check_method(method, sampling_ratio)
  n, c = feats[0].shape[0], feats[0].shape[-1]
  dtype = feats[0].dtype
  hs_l = [f.shape[1] for f in feats]
  ws_l = [f.shape[2] for f in feats]
  rois = lax.stop_gradient(rois.astype(jnp.float32))
  roi_batch = roi_batch.astype(jnp.int32)
  li = jnp.clip(levels.astype(jnp.int32) - first, 0, num - 1)
  scale = jnp.asarray(spatial_scales, jnp.float32)[li]
  hs = jnp.asarray(hs_l, jnp.int32)[li]
  ws = jnp.asarray(ws_l, jnp.int32)[li]
  max_h, max_w = _max_grid(sampling_ratio, max_sampling_ratio, hs_l, ws_l, oh, ow)
  x1, y1, rw, rh = _roi_geometry(rois, scale, aligned)
  gh, gw = _grids(rh, rw, oh, ow, sampling_ratio, max_h, max_w)
  th, tw = hs, ws
  if valid_hw is not None:  # [L, N, 2] at each RoI's level and image
    v = jnp.stack([jnp.asarray(x, jnp.int32) for x in valid_hw])[li, roi_batch]
    th, tw = v[:, 0], v[:, 1]
  yi, wy = _axis_taps(y1, rh, oh, gh, max_h, th)
  xi, wx = _axis_taps(x1, rw, ow, gw, max_w, tw)
  if method == 'matmul':
    out = 0.0
    for k, f in enumerate(feats):
      on = (li == k).astype(wy.dtype)[:, None, None]
      out = out + _pool_matmul(f, roi_batch, yi, wy * on, xi, wx)
    return out.astype(dtype)
  sizes = [h * w for h, w in zip(hs_l, ws_l)]
  total = sum(sizes)
  offsets = jnp.asarray([sum(sizes[:k]) for k in range(num)], jnp.int32)
  flat = jnp.concatenate([f.reshape(n, -1, c) for f in feats], axis=1).reshape(n * total, c)
  base = roi_batch * total + offsets[li]
  return _pool_gather(flat, base, ws, yi, wy, xi, wx).astype(dtype)
