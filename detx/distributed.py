"""Multi-process start-up: `jax.distributed.initialize` when the environment asks for it.

Set DETX_COORDINATOR=host:port, DETX_NUM_PROCESSES and DETX_PROCESS_ID (or run under
SLURM / a TPU pod slice, which JAX detects itself with DETX_DISTRIBUTED=auto).
"""
import os

import jax


def initialize():
  coord = os.environ.get('DETX_COORDINATOR')
  if coord:
    jax.distributed.initialize(coordinator_address=coord,
                               num_processes=int(os.environ['DETX_NUM_PROCESSES']),
                               process_id=int(os.environ['DETX_PROCESS_ID']))
  elif os.environ.get('DETX_DISTRIBUTED') == 'auto':
    jax.distributed.initialize()
