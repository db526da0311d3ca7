"""PaddlePaddle 1.x parameter files <-> Flax variables (no paddle or protobuf needed).

File format (lod_tensor.cc SerializeToStream + tensor_util.cc TensorToStream), little-endian:
  uint32 LoDTensor version (0); uint64 LoD level count, per level uint64 byte size + offsets;
  uint32 Tensor version (0); int32 N; N bytes of a VarType.TensorDesc protobuf
  (field 1 data_type enum, field 2 repeated int64 dims); then the raw row-major data.
A checkpoint directory (`save_persistables`, released model tars) holds one such file per
variable, named after it; a combined file (`__params__`, `save_combine`) concatenates the
records without names in sorted variable-name order.

Names: every Flax module whose parameters come from Paddle is named by its Paddle prefix,
so a variable's Paddle name follows from the end of its path. A `Rule` is a regex on the
end of the '/'-joined path inside one collection ('params' or 'batch_stats') plus a name
template and a layout; the first matching rule of a list wins. Rule sets per family:

  RESNET_RULES    ResNet/ResNeXt backbones and the ResNetC5 head (underscore style)
                  <p>/conv/kernel -> <p>_weights; norm <bn>/scale|bias -> <bn>_scale|_offset,
                  batch_stats <bn>/mean|var -> <bn>_mean|_variance (bn = bn* or *_bn)
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
import io
import os
import re
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------------------
# The per-variable file format.

_DTYPES = {
    0: np.dtype(np.bool_), 1: np.dtype(np.int16), 2: np.dtype(np.int32),
    3: np.dtype(np.int64), 4: np.dtype(np.float16), 5: np.dtype(np.float32),
    6: np.dtype(np.float64), 19: np.dtype(np.uint64), 20: np.dtype(np.uint8),
    21: np.dtype(np.int8), 23: np.dtype(np.complex64), 24: np.dtype(np.complex128)}
try:  # BF16 = 22
  import ml_dtypes
  _DTYPES[22] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
  pass
_CODES = {v: k for k, v in _DTYPES.items()}


class PaddleFormatError(ValueError):
  """A file that is not a Paddle 1.x tensor record (the message names the file)."""


class WeightLoadError(ValueError):
  """Weights that do not fit the model (the message names the files/variables)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise ValueError('truncated varint')
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _signed64(v: int) -> int:
  return v - (1 << 64) if v >= 1 << 63 else v


def _encode_varint(v: int) -> bytes:
  v &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = v & 0x7F
    v >>= 7
    if v:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def decode_tensor_desc(buf: bytes) -> tuple[int, list[int]]:
  """VarType.TensorDesc -> (data_type code, dims). Accepts packed or unpacked dims and
  skips unknown fields."""
  pos, code, dims = 0, None, []
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
      if field == 1:
        code = value
      elif field == 2:
        dims.append(_signed64(value))
    elif wire == 2:
      n, pos = _varint(buf, pos)
      chunk, pos = buf[pos:pos + n], pos + n
      if field == 2:
        p = 0
        while p < len(chunk):
          value, p = _varint(chunk, p)
          dims.append(_signed64(value))
    elif wire == 1:
      pos += 8
    elif wire == 5:
      pos += 4
    else:
      raise ValueError(f'unsupported protobuf wire type {wire}')
  if code is None:
    raise ValueError('TensorDesc without data_type')
  return code, dims


def encode_tensor_desc(code: int, dims: Sequence[int]) -> bytes:
  out = b'\x08' + _encode_varint(code)
  for d in dims:
    out += b'\x10' + _encode_varint(int(d))
  return out


def _read_exact(stream, n: int, what: str) -> bytes:
  data = stream.read(n)
  if len(data) != n:
    raise ValueError(f'truncated while reading {what} ({len(data)} of {n} bytes)')
  return data


def read_tensor(stream) -> np.ndarray:
  """Reads one LoDTensor record from a binary stream (LoD offsets are discarded)."""
  (version,) = struct.unpack('<I', _read_exact(stream, 4, 'LoDTensor version'))
  if version != 0:
    raise ValueError(f'LoDTensor version {version}, expected 0')
  (levels,) = struct.unpack('<Q', _read_exact(stream, 8, 'LoD level count'))
  if levels > 16:
    raise ValueError(f'implausible LoD level count {levels}')
  for _ in range(levels):
    (size,) = struct.unpack('<Q', _read_exact(stream, 8, 'LoD level size'))
    _read_exact(stream, size, 'LoD offsets')
  (version,) = struct.unpack('<I', _read_exact(stream, 4, 'Tensor version'))
  if version != 0:
    raise ValueError(f'Tensor version {version}, expected 0')
  (n,) = struct.unpack('<i', _read_exact(stream, 4, 'TensorDesc size'))
  if not 0 < n < 1 << 16:
    raise ValueError(f'implausible TensorDesc size {n}')
  code, dims = decode_tensor_desc(_read_exact(stream, n, 'TensorDesc'))
  if code not in _DTYPES:
    raise ValueError(f'unsupported Paddle data_type {code}')
  if any(d < 0 for d in dims):
    raise ValueError(f'negative dims {dims}')
  dtype = _DTYPES[code]
  count = int(np.prod(dims, dtype=np.int64))
  data = _read_exact(stream, count * dtype.itemsize, f'data of shape {dims}')
  return np.frombuffer(data, dtype.newbyteorder('<')).astype(dtype).reshape(dims)


def write_tensor(stream, array) -> None:
  """Writes one LoDTensor record (no LoD), as Paddle's save op does."""
  a = np.asarray(array)
  if a.dtype not in _CODES:
    raise ValueError(f'no Paddle data_type for numpy dtype {a.dtype}')
  desc = encode_tensor_desc(_CODES[a.dtype], a.shape)
  stream.write(struct.pack('<IQI', 0, 0, 0))
  stream.write(struct.pack('<i', len(desc)))
  stream.write(desc)
  stream.write(np.ascontiguousarray(a, a.dtype.newbyteorder('<')).tobytes())


def _format_error(path, err: Exception) -> PaddleFormatError:
  hint = ''
  try:
    with open(path, 'rb') as f:
      if f.read(1) == b'\x80':
        hint = ' (this looks like a pickle, e.g. a Paddle 2.x .pdparams: use paddle.load)'
  except OSError:
    pass
  return PaddleFormatError(f'{path}: not a Paddle 1.x tensor file: {err}{hint}')


def load_paddle_file(path) -> np.ndarray:
  """One per-variable file -> numpy array (the whole file must be one record)."""
  try:
    with open(path, 'rb') as f:
      a = read_tensor(f)
      if f.read(1):
        raise ValueError('trailing bytes after the tensor')
  except (ValueError, struct.error) as e:
    raise _format_error(path, e) from None
  return a


def save_paddle_file(path, array) -> None:
  with open(path, 'wb') as f:
    write_tensor(f, array)


_NOT_TENSORS = ('__model__', '__params__')


def list_paddle_dir(dirname) -> list[str]:
  """Variable names in a per-variable directory (files, minus __model__/__params__/hidden)."""
  return sorted(n for n in os.listdir(dirname)
                if os.path.isfile(os.path.join(dirname, n)) and not n.startswith('.')
                and n not in _NOT_TENSORS)


def load_paddle_dir(dirname, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
  """A directory of per-variable files -> {name: array} (all of them, or just `names`)."""
  names = list_paddle_dir(dirname) if names is None else list(names)
  return {n: load_paddle_file(os.path.join(dirname, n)) for n in names}


def load_paddle_combined(path, names: Sequence[str] | None = None, sort: bool = True):
  """A combined file (`__params__`) -> {name: array} given the variable names (sorted
  first unless sort=False, since save_combine writes in sorted order), or the list of
  arrays when names is None."""
  arrays = []
  try:
    with open(path, 'rb') as f:
      size = os.fstat(f.fileno()).st_size
      while f.tell() < size:
        arrays.append(read_tensor(f))
  except (ValueError, struct.error) as e:
    raise _format_error(path, f'record {len(arrays)}: {e}') from None
  if names is None:
    return arrays
  names = sorted(names) if sort else list(names)
  if len(names) != len(arrays):
    raise PaddleFormatError(f'{path}: holds {len(arrays)} tensors but {len(names)} names '
                            'were given')
  return dict(zip(names, arrays))


def save_paddle_combined(path, arrays: Mapping[str, Any]) -> None:
  """{name: array} -> one combined file in sorted name order (like save_combine)."""
  with open(path, 'wb') as f:
    for name in sorted(arrays):
      write_tensor(f, arrays[name])


def save_paddle_dir(dirname, arrays: Mapping[str, Any]) -> None:
  os.makedirs(dirname, exist_ok=True)
  for name, a in arrays.items():
    save_paddle_file(os.path.join(dirname, name), a)


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
RESNET_RULES = (
    Rule(r'(?P<p>[^/]+)/conv/kernel', '{p}_weights', layout=KERNEL),
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
