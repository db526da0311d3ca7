"""PaddleDetection 2.x `.pdparams` files (paddle.save of a state dict: a pickle of
{name: numpy array}) read as data, never as code.

A pickle may name any importable callable and call it (``os.system`` included), so
`load_pdparams` unpickles with a restricted unpickler: the only globals it resolves are
numpy's array reconstructor (for plain ndarrays), numpy.dtype (no object dtype),
numpy scalars, collections.OrderedDict and ``_codecs.encode`` with latin-1 (protocol 2's
bytes). Anything else is refused before it is called: one line naming the file.
"""
from __future__ import annotations

import codecs
import collections
import pickle

import numpy as np

from detx.weights.paddle import WeightLoadError

# Keys paddle.save adds besides the parameters (a name map of a dygraph state dict).
_META_KEYS = ('StructuredToParameterName@@',)


def _reconstruct(subtype, shape, dtype_code):
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError(f'array subtype {subtype!r} is not numpy.ndarray')
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _dtype(spec, align=False, copy=False):
  dt = np.dtype(spec, align, copy)
  if dt.hasobject:
    raise pickle.UnpicklingError(f'object dtype {spec!r} is not allowed')
  return dt


def _scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
    raise pickle.UnpicklingError('numpy scalar of an object dtype is not allowed')
  return np.frombuffer(data, dtype)[0]


def _encode(text, encoding='latin1'):
  if str(encoding).lower().replace('-', '') != 'latin1':
    raise pickle.UnpicklingError(f'_codecs.encode with {encoding!r} is not allowed')
  return codecs.encode(text, 'latin1')


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): _dtype,
    ('_codecs', 'encode'): _encode,
}
for _core in ('numpy.core.multiarray', 'numpy._core.multiarray'):
  _ALLOWED[(_core, '_reconstruct')] = _reconstruct
  _ALLOWED[(_core, 'scalar')] = _scalar


class _DataUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f'it would call {module}.{name}') from None


def load_pdparams(path) -> dict[str, np.ndarray]:
  """{parameter name: array} of a .pdparams file; WeightLoadError (one line naming the
  file) when it is not a pickle of arrays, or would build anything else."""
  try:
    with open(path, 'rb') as f:
      data = _DataUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          IndexError, KeyError, MemoryError) as e:
    raise WeightLoadError(f'{path}: refused as a .pdparams file (weights are data, not '
                          f'code): {" ".join(str(e).split()) or type(e).__name__}') from None
  if not isinstance(data, dict):
    raise WeightLoadError(f'{path}: a .pdparams file holds a dict of arrays, this one a '
                          f'{type(data).__name__}')
  arrays = {}
  for k, v in data.items():
    if k in _META_KEYS:
      continue
    if not isinstance(k, str) or not isinstance(v, np.ndarray):
      raise WeightLoadError(f'{path}: entry {k!r} is a {type(v).__name__}, not an array')
    arrays[k] = v
  return arrays


def save_pdparams(path, arrays) -> None:
  """{name: array} -> a .pdparams file as paddle.save writes a state dict (protocol 4)."""
  with open(path, 'wb') as f:
    pickle.dump({k: np.asarray(v) for k, v in arrays.items()}, f, protocol=4)
