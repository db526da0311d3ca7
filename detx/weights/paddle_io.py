"""PaddlePaddle 1.x parameter files <-> numpy arrays (no paddle or protobuf needed).

File format (lod_tensor.cc SerializeToStream + tensor_util.cc TensorToStream), little-endian:
  uint32 LoDTensor version (0); uint64 LoD level count, per level uint64 byte size + offsets;
  uint32 Tensor version (0); int32 N; N bytes of a VarType.TensorDesc protobuf
  (field 1 data_type enum, field 2 repeated int64 dims); then the raw row-major data.
A checkpoint directory (`save_persistables`, released model tars) holds one such file per
variable, named after it; a combined file (`__params__`, `save_combine`) concatenates the
records without names in sorted variable-name order.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Iterable, Mapping, Sequence

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
