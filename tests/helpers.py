"""Small configs and data shared by the training tests, the tiny quickstart's command
line, checks that a run left no loader workers or shared memory behind, and `compiled`,
one program per call at XLA's cheapest CPU settings."""
import os
import time
from pathlib import Path

import numpy as np

from detx import config as cfg
from detx.data import synthetic


# Tests run small inputs once: XLA's cheapest CPU compile. Run op by op instead, a model
# compiles each op for each shape, which took several times longer.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def compiled(f, *args):
  """f(*args), jitted and compiled with FAST_COMPILE."""
  import jax
  return jax.jit(f).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def tiny_config(tmp_path, steps=6, sizes=(64,), **overrides):
  """A very small YOLOv3 on a small generated shapes dataset under tmp_path."""
  data_dir = tmp_path / 'shapes'
  if not data_dir.exists():
    synthetic.generate(data_dir, num_train=24, num_val=8, image_size=64, seed=0)
  c = cfg.load('quickstart')
  c.model.backbone.depths = (1, 1, 1, 1, 1)
  c.model.backbone.width = 0.125
  c.data.dir = str(data_dir)
  c.data.cache_dir = str(tmp_path / 'tfds')
  c.data.train_sizes = tuple(sizes)
  c.data.max_boxes = 8
  c.eval.size = 64
  c.eval.batch_size = 4
  c.train.batch_size = 4
  c.train.steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = 3
  return cfg.override(c, overrides)


def flat_params(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


# The tiny_config model and data sizes as `python -m detx.main` overrides.
TINY_ARGS = ('--config.model.backbone.depths=(1,1,1,1,1)', '--config.model.backbone.width=0.125',
             '--config.data.train_sizes=(64,)', '--config.eval.size=64',
             '--config.train.batch_size=4', '--config.eval.batch_size=4',
             '--config.data.max_boxes=8', '--config.train.log_every=1')


def tiny_argv(workdir, data_dir, cache_dir, *extra) -> list[str]:
  """`detx.main` arguments (without the program name) for tiny_config's model on the
  shapes dataset in `data_dir`, compiled into the tests' shared compilation cache
  (conftest) rather than the config's ~/.cache."""
  return [f'--config={cfg.CONFIG_DIR / "quickstart.py"}', f'--workdir={workdir}',
          f'--config.data.dir={data_dir}', f'--config.data.cache_dir={cache_dir}', *TINY_ARGS,
          f'--config.compile_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}', *extra]


def shm_objects() -> set:
  """The names in /dev/shm (POSIX shared memory; the loader workers' slots are detx_*)."""
  d = Path('/dev/shm')
  return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _ppid(pid: str) -> int:
  stat = Path(f'/proc/{pid}/stat').read_text()
  return int(stat.rsplit(')', 1)[1].split()[1])


def live_children() -> list[str]:
  """This process's child processes (cmdlines), multiprocessing's resource tracker aside."""
  out = []
  for d in Path('/proc').iterdir():
    try:
      if d.name.isdigit() and _ppid(d.name) == os.getpid():
        cmd = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        if 'resource_tracker' not in cmd:
          out.append(cmd)
    except (OSError, IndexError, ValueError):
      pass
  return out


def marked_processes(marker: str) -> list[str]:
  """Processes whose environment holds DETX_TEST_MARK=<marker> (a subprocess started
  with it, and every process that inherited it: loader workers, resource tracker)."""
  needle = f'DETX_TEST_MARK={marker}'.encode()
  out = []
  for d in Path('/proc').iterdir():
    try:
      if d.name.isdigit() and needle in (d / 'environ').read_bytes().split(b'\0'):
        out.append((d / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace'))
    except OSError:
      pass
  return out


def wait_until(predicate, timeout: float = 20.0) -> bool:
  t0 = time.time()
  while not predicate():
    if time.time() - t0 > timeout:
      return False
    time.sleep(0.2)
  return True


def assert_released(shm_before: set, marker: str | None = None, timeout: float = 20.0):
  """None of the /dev/shm objects that appeared since `shm_before` is still there after
  `timeout` seconds (a test running beside this one under pytest-xdist creates and
  unlinks its own in moments; a leaked one stays), and (marker) no process of that
  subprocess, its loader workers included, is left."""
  new = shm_objects() - shm_before
  assert wait_until(lambda: not (new & shm_objects()), timeout), \
      f'shared memory left behind: {sorted(new & shm_objects())}'
  if marker is not None:
    assert wait_until(lambda: not marked_processes(marker), timeout), \
        f'processes left behind: {marked_processes(marker)}'
