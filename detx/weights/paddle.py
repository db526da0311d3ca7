"""PaddlePaddle 1.x weights <-> Flax variables: name rules, layouts and loading into a
model tree. The file format itself (per-variable files, `__params__` bundles) is
detx.weights.paddle_io, whose functions are re-exported here.

Names: every Flax module whose parameters come from Paddle is named by its Paddle prefix,
so a variable's Paddle name follows from the end of its path. A `Rule` is a regex on the
end of the '/'-joined path inside one collection ('params' or 'batch_stats') plus a name
template and a layout; the first matching rule of a list wins. Rule sets per family:

  RESNET_RULES    ResNet/ResNeXt/SENet/MobileNet backbones and the ResNetC5 head
                  (underscore style) <p>/conv/kernel -> <p>_weights; norm <bn>/scale|bias
                  -> <bn>_scale|_offset, batch_stats <bn>/mean|var -> <bn>_mean|_variance
                  (bn = bn* or *_bn); SENet's SE fcs fc<n>_sqz|_exc/kernel|bias ->
                  <p>_weights|_offset
  DARKNET_RULES   DarkNet and the YOLOv3 head (dot style)
                  <p>/conv/kernel|bias -> <p>.conv.weights|.bias;
                  <p>/bn/scale|bias|mean|var -> <p>.bn.scale|.offset|.mean|.var
  DETECTRON_RULES FPN, RPN, R-CNN/mask/RetinaNet heads: an nn.Conv/nn.Dense named <p>
                  <p>/kernel|bias -> <p>_w|_b (conv5_mask: transposed-conv layout)

Compose them, scoped to a subtree where two families would collide, e.g. YOLOv3-R34:
`scoped('backbone', RESNET_RULES) + scoped('head', DARKNET_RULES)`; Faster R-CNN FPN:
`RESNET_RULES + DETECTRON_RULES`. Prepend specific rules, e.g. the fc6 that follows a
CHW flatten of 7x7 RoI features: `Rule(r'(?P<p>fc6)/kernel', '{p}_w', layout=fc_from_chw(7, 7))`.

Layouts (Paddle -> Flax): conv OIHW -> HWIO; FC [in, out] unchanged; transposed conv
[in, out, kh, kw] -> flipped HWIO for nn.ConvTranspose(transpose_kernel=False);
FC after a CHW flatten: rows reordered to NHWC-flatten order.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

# The file format, re-exported: callers use `pw.load_paddle_dir`, `pw.PaddleFormatError`...
from detx.weights.paddle_io import (PaddleFormatError, decode_tensor_desc,  # noqa: F401
                                    encode_tensor_desc, list_paddle_dir, load_paddle_combined,
                                    load_paddle_dir, load_paddle_file, read_tensor,
                                    save_paddle_combined, save_paddle_dir, save_paddle_file,
                                    write_tensor)


class WeightLoadError(ValueError):
  """Weights that do not fit the model (the message names the files/variables)."""


# --------------------------------------------------------------------------------------
# Layouts.

@dataclasses.dataclass(frozen=True)
class Layout:
  """How a Paddle array becomes a Flax one and back."""
  name: str
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_paddle: Callable[[np.ndarray], np.ndarray]


def _kernel_to_flax(a):
  return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a


def _kernel_to_paddle(a):
  return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a


IDENTITY = Layout('identity', lambda a: a, lambda a: a)
# conv OIHW <-> HWIO; 2-D FC kernels are [in, out] in both and pass unchanged.
KERNEL = Layout('kernel', _kernel_to_flax, _kernel_to_paddle)
# Paddle conv2d_transpose [in, out, kh, kw] (the gradient of a conv) <-> the kernel of
# nn.ConvTranspose(transpose_kernel=False) [kh, kw, in, out], spatially flipped.
DECONV = Layout('deconv', lambda a: a.transpose(2, 3, 0, 1)[::-1, ::-1],
                lambda a: a[::-1, ::-1].transpose(2, 3, 0, 1))


def chw_rows_to_hwc(w, height: int, width: int):
  """FC weight [C*H*W, out] whose rows follow Paddle's CHW flatten (row c*H*W + h*W + w)
  -> rows in NHWC-flatten order (row h*W*C + w*C + c)."""
  w = np.asarray(w)
  c = w.shape[0] // (height * width)
  if c * height * width != w.shape[0]:
    raise ValueError(f'{w.shape[0]} rows is not C x {height} x {width}')
  return w.reshape(c, height, width, -1).transpose(1, 2, 0, 3).reshape(w.shape)


def hwc_rows_to_chw(w, height: int, width: int):
  """Inverse of chw_rows_to_hwc."""
  w = np.asarray(w)
  c = w.shape[0] // (height * width)
  if c * height * width != w.shape[0]:
    raise ValueError(f'{w.shape[0]} rows is not {height} x {width} x C')
  return w.reshape(height, width, c, -1).transpose(2, 0, 1, 3).reshape(w.shape)


def fc_from_chw(height: int, width: int) -> Layout:
  """Layout of an FC that follows a flatten of a C x height x width map (e.g. fc6 on
  7x7 RoI features) when the Flax model flattens NHWC."""
  return Layout(f'fc_from_chw({height},{width})',
                lambda a: chw_rows_to_hwc(a, height, width),
                lambda a: hwc_rows_to_chw(a, height, width))


# --------------------------------------------------------------------------------------
# Name rules.

@dataclasses.dataclass(frozen=True)
class Rule:
  """`pattern` is searched at a path-component boundary and must reach the end of the
  '/'-joined path of a variable in `collection`; `template` is str.format'ed with its
  named groups. `under`: only variables under this path prefix."""
  pattern: str
  template: str
  collection: str = 'params'
  layout: Layout = IDENTITY
  under: str = ''

  def match(self, collection: str, path: str) -> str | None:
    if collection != self.collection:
      return None
    if self.under and not (path == self.under or path.startswith(self.under + '/')):
      return None
    m = re.search(r'(?:^|/)(?:' + self.pattern + r')$', path)
    return self.template.format(**m.groupdict()) if m else None


def scoped(under: str, rules: Iterable[Rule]) -> tuple[Rule, ...]:
  """The rules restricted to variables under path prefix `under` (e.g. 'backbone')."""
  under = under.strip('/')
  return tuple(dataclasses.replace(r, under=f'{under}/{r.under}' if r.under else under)
               for r in rules)


_NORM = r'(?P<p>bn[^/]+|[^/]+_bn)'  # bn_conv1, bn2a_branch2a, bnv1_1, conv1_bn; not 'bn'
_SE_FC = r'(?P<p>fc[^/]+_(?:sqz|exc))'  # SENet's squeeze-excitation fcs: fc4_1_sqz, fc7_3_exc
RESNET_RULES = (
    Rule(r'(?P<p>[^/]+)/conv/kernel', '{p}_weights', layout=KERNEL),
    Rule(_SE_FC + '/kernel', '{p}_weights'),
    Rule(_SE_FC + '/bias', '{p}_offset'),
    Rule(_NORM + '/scale', '{p}_scale'),
    Rule(_NORM + '/bias', '{p}_offset'),
    Rule(_NORM + '/mean', '{p}_mean', 'batch_stats'),
    Rule(_NORM + '/var', '{p}_variance', 'batch_stats'),
)

DARKNET_RULES = (
    Rule(r'(?P<p>[^/]+)/conv/kernel', '{p}.conv.weights', layout=KERNEL),
    Rule(r'(?P<p>[^/]+)/conv/bias', '{p}.conv.bias'),
    Rule(r'(?P<p>[^/]+)/bn/scale', '{p}.bn.scale'),
    Rule(r'(?P<p>[^/]+)/bn/bias', '{p}.bn.offset'),
    Rule(r'(?P<p>[^/]+)/bn/mean', '{p}.bn.mean', 'batch_stats'),
    Rule(r'(?P<p>[^/]+)/bn/var', '{p}.bn.var', 'batch_stats'),
)
YOLOV3_RULES = DARKNET_RULES

_LAYER = r'(?P<p>(?!(?:conv|bn)/)[^/]+)'
DETECTRON_RULES = (
    Rule(r'(?P<p>conv5_mask)/kernel', '{p}_w', layout=DECONV),
    Rule(_LAYER + '/kernel', '{p}_w', layout=KERNEL),
    Rule(_LAYER + '/bias', '{p}_b'),
)


def _flatten(variables) -> dict[tuple[str, ...], Any]:
  from flax import traverse_util
  from flax.core import unfreeze
  return traverse_util.flatten_dict(unfreeze(variables))


def paddle_names(variables, rules: Sequence[Rule]):
  """-> ({flax path tuple: (paddle name, layout)}, [unmapped '/'-paths]).

  Raises WeightLoadError when two variables map to one Paddle name."""
  mapping, unmapped, owner = {}, [], {}
  for key in _flatten(variables):
    collection, path = key[0], '/'.join(key[1:])
    for rule in rules:
      name = rule.match(collection, path)
      if name is not None:
        if name in owner:
          raise WeightLoadError(f'{"/".join(owner[name])} and {"/".join(key)} both map to '
                                f'Paddle name {name!r}')
        owner[name] = key
        mapping[key] = (name, rule.layout)
        break
    else:
      unmapped.append('/'.join(key))
  return mapping, unmapped


def export_paddle_weights(variables, rules: Sequence[Rule], strict: bool = True):
  """Flax variables -> {paddle name: numpy array in Paddle's layout}."""
  flat = _flatten(variables)
  mapping, unmapped = paddle_names(variables, rules)
  if unmapped and strict:
    raise WeightLoadError(f'no rule maps {len(unmapped)} variables: {unmapped[:5]}')
  return {name: np.ascontiguousarray(layout.to_paddle(np.asarray(flat[key])))
          for key, (name, layout) in mapping.items()}


def save_paddle_weights(variables, path, rules: Sequence[Rule], combined: bool = False):
  """Writes a per-variable directory (or, combined=True, one `path` file in sorted order)."""
  arrays = export_paddle_weights(variables, rules)
  if combined:
    save_paddle_combined(path, arrays)
  else:
    save_paddle_dir(path, arrays)
  return sorted(arrays)


# --------------------------------------------------------------------------------------
# Loading into a model.

# Checkpoint contents that are never model variables: optimizer accumulators, lr state.
DEFAULT_IGNORE = (r'.*_velocity_\d+$', r'.*_moment\d?_\d+$', r'.*_beta\d_pow_acc_\d+$',
                  r'^@LR_DECAY_COUNTER@$', r'^learning_rate_\d+$')


@dataclasses.dataclass
class LoadReport:
  loaded: list[str] = dataclasses.field(default_factory=list)
  missing: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (flax, file)
  mismatched: list[tuple[str, str, tuple, tuple]] = dataclasses.field(default_factory=list)
  unmapped: list[str] = dataclasses.field(default_factory=list)   # flax paths, no rule
  unexpected: list[str] = dataclasses.field(default_factory=list)  # source names unused
  ignored: list[str] = dataclasses.field(default_factory=list)     # DEFAULT_IGNORE hits
  fused: list[str] = dataclasses.field(default_factory=list)       # BN prefixes fused

  @property
  def ok(self) -> bool:
    return not (self.missing or self.mismatched or self.unmapped)

  def __str__(self) -> str:
    lines = [f'loaded {len(self.loaded)}, missing {len(self.missing)}, shape mismatches '
             f'{len(self.mismatched)}, unmapped {len(self.unmapped)}, unexpected '
             f'{len(self.unexpected)}, ignored {len(self.ignored)}, fused BN {len(self.fused)}']
    lines += [f'  missing: {f} (for {v})' for v, f in self.missing[:10]]
    lines += [f'  shape mismatch: {f} has {got} (Flax layout), {v} needs {want}'
              for v, f, want, got in self.mismatched[:10]]
    lines += [f'  unmapped (no rule): {v}' for v in self.unmapped[:10]]
    lines += [f'  unexpected: {n}' for n in self.unexpected[:10]]
    return '\n'.join(lines)


class _Source:
  """Lazy name -> array access to a directory, a combined file or a mapping."""

  def __init__(self, source, expected: Sequence[str], names):
    self.dir = None
    if isinstance(source, Mapping):
      self.arrays, self.label = {k: np.asarray(v) for k, v in source.items()}, '<arrays>'
    elif os.path.isdir(source):
      self.dir, self.label = Path(source), str(source)
      self.arrays = {}
    elif os.path.isfile(source):
      self.label = str(source)
      self.arrays = load_paddle_combined(source, names if names is not None else expected)
    else:
      raise WeightLoadError(f'{source}: no such file or directory')
    self.names = set(list_paddle_dir(self.dir) if self.dir else self.arrays)

  def where(self, name: str) -> str:
    return str(self.dir / name) if self.dir else f'{self.label}[{name}]'

  def __contains__(self, name):
    return name in self.names

  def __getitem__(self, name) -> np.ndarray:
    if name not in self.arrays:
      self.arrays[name] = load_paddle_file(self.dir / name)
    return self.arrays[name]


def fuse_bn(scale, offset, mean, variance, epsilon: float = 1e-5):
  """Paddle's load_and_fusebn: BN (scale, offset, mean, variance) -> affine (scale', bias')."""
  s = scale / np.sqrt(variance + epsilon)
  return s, offset - mean * s


def load_paddle_weights(variables, source, rules: Sequence[Rule], strict: bool = True,
                        names: Sequence[str] | None = None, fuse_norm: bool = False,
                        ignore: Sequence[str] = DEFAULT_IGNORE):
  """Fills Flax `variables` ({'params': ..., 'batch_stats': ...}; arrays or
  ShapeDtypeStructs) from Paddle weights. Returns (new variables, LoadReport).

  source: a per-variable directory, a combined file (`__params__`: its records are
  matched to `names`, default the sorted names the rules expect), or {name: array}.
  fuse_norm: where the model wants `<bn>_scale/_offset` but no `<bn>_mean` (an
  AffineChannel) and the source has a full BN (ImageNet pretraining), fold it in as
  Paddle's load_and_fusebn does.
  strict: raise WeightLoadError unless every variable got a same-shape array (missing,
  shape mismatch, no rule). Source variables the model does not use (classifier fc,
  optimizer state) are only reported: `unexpected`, or `ignored` for DEFAULT_IGNORE.
  Arrays are cast to each variable's dtype; variables not loaded keep their value.
  """
  import jax.numpy as jnp
  from flax import traverse_util

  flat = _flatten(variables)
  mapping, unmapped = paddle_names(variables, rules)
  expected = [name for name, _ in mapping.values()]
  src = _Source(source, expected, names)
  report = LoadReport(unmapped=sorted(unmapped))
  wanted = set(expected)
  used = set()
  new = dict(flat)
  for key, (name, layout) in mapping.items():
    path = '/'.join(key)
    target = flat[key]
    array = None
    if fuse_norm and name.endswith(('_scale', '_offset')):
      prefix = name.rsplit('_', 1)[0]
      parts = [prefix + s for s in ('_scale', '_offset', '_mean', '_variance')]
      if prefix + '_mean' not in wanted and all(p in src for p in parts):
        scale, bias = fuse_bn(*(src[p].astype(np.float64) for p in parts))
        array = scale if name.endswith('_scale') else bias
        used.update(parts)
        if prefix not in report.fused:
          report.fused.append(prefix)
    if array is None and name in src:
      array = src[name]
      used.add(name)
    if array is None:
      report.missing.append((path, src.where(name)))
      continue
    try:
      converted = layout.to_flax(array)
    except ValueError as e:
      raise WeightLoadError(f'{src.where(name)}: cannot convert for {path}: {e}') from None
    if tuple(converted.shape) != tuple(target.shape):
      report.mismatched.append((path, src.where(name), tuple(target.shape),
                                tuple(converted.shape)))
      continue
    new[key] = jnp.asarray(np.ascontiguousarray(converted), dtype=target.dtype)
    report.loaded.append(name)
  for n in sorted(src.names - used):
    (report.ignored if any(re.match(p, n) for p in ignore) else report.unexpected).append(n)
  if strict and not report.ok:
    raise WeightLoadError(f'Paddle weights from {src.label} do not fit the model:\n{report}')
  return traverse_util.unflatten_dict(new), report
