"""Example functions of the loader's worker tests, in a module of their own: a worker
process imports the module of the function it runs, and this one imports only numpy
(test_loader.py brings jax, which would add to every worker's start)."""
import numpy as np


class Cases:
  """Global position -> the elements of several pipelines' train functions, keys
  prefixed by case (one pool of workers for all of them: a pool's start is the cost)."""

  def __init__(self, fns):
    self.fns = fns

  def __call__(self, position):
    return {f'{case}/{k}': v for case, fn in self.fns.items() for k, v in fn(position).items()}


class Growing:
  """Index -> an element that grows with its batch (batch b: (b + 1) * 5000 floats each,
  so a worker's slots are outgrown and replaced), a ValueError at index `fail`."""

  def __init__(self, fail=-1):
    self.fail = fail

  def __call__(self, i):
    if i == self.fail:
      raise ValueError(f'bad element {i}')
    return {'x': np.full((i // 2 + 1) * 5000, i, np.float32), 'i': np.int64(i)}
