"""Device mesh and shardings.

The mesh has one axis, 'data', over every device of every process. Batches are
split along it. Parameters and optimizer state are either replicated (data
parallel) or, with `train.param_sharding='fsdp'`, each array is split along its
largest dimension that the device count divides (ZeRO-3 style: XLA gathers a
layer's weights when it needs them and reduce-scatters their gradients).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PARAM_SHARDINGS = ('replicated', 'fsdp')


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape, n: int, min_size: int = 2 ** 14) -> P:
  """Splits the largest dimension divisible by n; small arrays stay replicated."""
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % n == 0:
      return P(*([None] * axis + ['data']))
  return P()


def state_shardings(abstract_state, mesh: Mesh, mode: str = 'replicated'):
  """A pytree of NamedShardings for a (possibly abstract) train state."""
  if mode not in PARAM_SHARDINGS:
    raise ValueError(f'train.param_sharding={mode!r}; expected one of {PARAM_SHARDINGS}')
  n = mesh.devices.size
  def one(x):
    if mode == 'replicated' or not hasattr(x, 'shape'):
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(x.shape, n))
  return jax.tree.map(one, abstract_state)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places this process's rows of the global batch on the mesh.

  With one process the rows are the whole batch; with several, each process
  passes its own slice (per-host loading) and the global array is assembled.
  """
  n_local = len(mesh.local_devices)
  for k, v in batch.items():
    if v.shape[0] % n_local:
      raise ValueError(f'batch field {k!r} has {v.shape[0]} rows on this process, not '
                       f'divisible by its {n_local} devices: set the batch size to a '
                       f'multiple of the device count')
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
