"""Device mesh and shardings: data parallel over every device (all hosts)."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host numpy batch on the mesh, split along the batch axis."""
  n = mesh.devices.size
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f'batch field {k!r} has {v.shape[0]} rows, not divisible by '
                       f'{n} devices: set the batch size to a multiple of the device count')
  return jax.device_put(batch, batch_sharding(mesh))
