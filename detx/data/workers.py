"""Loader worker processes that hand whole batches over through reused shared memory.

Worker w of n makes batches first + w, first + w + n, ... (each one `job.batch(b)`, a
list of elements stacked straight into one of its `slots` shared-memory segments) and
sends the segment's name and the arrays' layout (a few hundred bytes) to the main
process, which copies the arrays out and hands the slot back. A slot is reused for the
next batch, so its pages are faulted in once: grain's mp_prefetch put every batch in a
fresh segment, and on this 2-core machine writing a fresh one cost ~10x writing a reused
one (23 against 2 ms CPU for 26 MB), as much as making a float32 R-CNN batch. The
batches are those of the in-process path in the same order, whatever `n` is: worker w
only ever makes the batches whose index is w modulo n.

Segments belong to the main process once their name has arrived: it unlinks a slot's
segment when the worker replaces it with a larger one, and all of them on ``close()``
(also after an error, or when the iteration ends). A worker ignores SIGINT / SIGTERM
(the main process handles them and stops the workers) and exits when its main process
dies.
"""
from __future__ import annotations

import errno
import os
import queue
import traceback
import uuid
from multiprocessing import shared_memory
from typing import Any, Callable

import numpy as np

_ALIGN = 64
_POLL_S = 0.2
_JOIN_S = 5.0


def _layout(elements: list[dict]) -> tuple[list, int]:
  """[(key, dtype str, shape, offset)] of the stacked arrays and the bytes they need."""
  out, offset = [], 0
  for key in elements[0]:
    parts = [np.asarray(e[key]) for e in elements]
    dtype = np.result_type(*parts)  # what np.stack makes of them
    if dtype.hasobject:
      raise TypeError(f'loader workers send numeric arrays; {key!r} is {dtype}')
    shape = (len(parts),) + parts[0].shape
    out.append((key, dtype.str, shape, offset))
    offset += -(-int(np.prod(shape, dtype=np.int64)) * dtype.itemsize // _ALIGN) * _ALIGN
  return out, offset


def _view(buf, layout_row) -> np.ndarray:
  _, dtype, shape, offset = layout_row
  return np.ndarray(shape, np.dtype(dtype), buffer=buf, offset=offset)


class _Worker:
  """The loop of one worker process (picklable arguments only)."""

  def __init__(self, job: bytes, index: int, count: int, slots: int, token: str):
    self.job, self.index, self.count, self.slots, self.token = job, index, count, slots, token
    self.mem: dict[int, shared_memory.SharedMemory] = {}
    self.made = 0

  def slot_for(self, slot: int, nbytes: int) -> shared_memory.SharedMemory:
    shm = self.mem.get(slot)
    if shm is None or shm.size < nbytes:
      if shm is not None:
        shm.close()  # the main process, which has its name, unlinks it
      self.made += 1
      name = f'detx_{self.token}_{self.index}_{slot}_{self.made}'
      shm = shared_memory.SharedMemory(name=name, create=True,
                                       size=max(nbytes + nbytes // 8, _ALIGN))
      _reserve(shm)
      self.mem[slot] = shm
    return shm


  def run(self, results, free, stop) -> None:
    import cloudpickle
    idle, b = list(range(self.slots)), None
    try:
      job = cloudpickle.loads(self.job)  # imports the pipeline's modules
      b = job.first + self.index
      while (job.stop is None or b < job.stop) and not stop.is_set():
        elements = job.batch(b)
        layout, nbytes = _layout(elements)
        while not idle:
          try:
            idle.append(free.get(timeout=_POLL_S))
          except queue.Empty:
            if stop.is_set():
              return
        slot = idle.pop()
        shm = self.slot_for(slot, nbytes)
        for row in layout:
          np.stack([e[row[0]] for e in elements], out=_view(shm.buf, row))
        results.put(('batch', b, slot, shm.name.lstrip('/'), layout))
        b += self.count
    except BaseException as e:  # pylint: disable=broad-except
      results.put(('error', b, _picklable(e), traceback.format_exc()))
    finally:
      for shm in self.mem.values():
        shm.close()


def _reserve(shm: shared_memory.SharedMemory) -> None:
  """Allocates the segment's pages now: a full /dev/shm is then a clear error here (the
  segment unlinked), not a SIGBUS when the batch is written."""
  try:
    os.posix_fallocate(shm._fd, 0, shm.size)  # pylint: disable=protected-access
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
      return  # a file system without fallocate: the pages come on first write
    _release(shm)
    from detx.errors import ConfigError
    raise ConfigError(
        f'/dev/shm has no room for a {shm.size / 1e6:.0f} MB loader batch ({e.strerror}): '
        f"lower data.num_workers or the batch size, set data.image_dtype='uint8', or "
        f'give the machine more shared memory (docker run --shm-size)') from None


def _picklable(e: BaseException) -> bytes | None:
  import pickle
  try:
    data = pickle.dumps(e)
    pickle.loads(data)
    return data
  except Exception:  # pylint: disable=broad-except
    return None


def _worker_main(worker: _Worker, results, free, stop, init: Callable | None) -> None:
  if init is not None:
    init(worker.index, worker.count)
  try:  # one OpenCV thread per worker: the workers are the parallelism
    import cv2
    cv2.setNumThreads(1)
  except ImportError:
    pass
  worker.run(results, free, stop)


class WorkerPool:
  """An iterator of `job`'s batches job.first, job.first + 1, ... (to job.stop, or
  forever when it is None) made in `num_workers` spawned processes; see the module
  docstring. `job` (pickled with cloudpickle) has first, stop and batch(b) -> the
  list of elements of batch b. `init(index, count)` runs first in each worker.
  loader.Batches owns one and closes it (also when it is garbage collected)."""

  def __init__(self, job, num_workers: int, slots: int = 2,
               init: Callable[[int, int], None] | None = None):
    import multiprocessing
    import cloudpickle
    ctx = multiprocessing.get_context('spawn')
    self._first, self._stop_at = int(job.first), job.stop
    self._next, self._n = self._first, int(num_workers)
    self._stop = ctx.Event()
    self._results = [ctx.Queue() for _ in range(self._n)]
    self._free = [ctx.Queue() for _ in range(self._n)]
    self._open: dict[tuple[int, int], shared_memory.SharedMemory] = {}
    token, data = uuid.uuid4().hex[:10], cloudpickle.dumps(job)
    self._procs = [ctx.Process(target=_worker_main, name=f'detx-loader-worker-{w}',
                               args=(_Worker(data, w, self._n, slots, token),
                                     self._results[w], self._free[w], self._stop, init),
                               daemon=True) for w in range(self._n)]
    self._closed = False
    for p in self._procs:
      p.start()

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._closed or (self._stop_at is not None and self._next >= self._stop_at):
      self.close()
      raise StopIteration
    w = (self._next - self._first) % self._n
    msg = self._receive(w)
    if msg[0] == 'error':
      self.close()
      raise _error(w, *msg[2:])
    _, b, slot, name, layout = msg
    assert b == self._next, (b, self._next)
    shm = self._segment(w, slot, name)
    batch = {row[0]: np.array(_view(shm.buf, row)) for row in layout}
    self._free[w].put(slot)
    self._next += 1
    return batch

  def _receive(self, w: int):
    while True:
      try:
        return self._results[w].get(timeout=_POLL_S)
      except queue.Empty:
        code = self._procs[w].exitcode
        if code is None:
          continue
        try:  # it may have sent its last message and exited
          return self._results[w].get(timeout=_POLL_S)
        except queue.Empty:
          self.close()
          raise RuntimeError(f'loader worker {w} exited with code {code}') from None

  def _segment(self, w: int, slot: int, name: str) -> shared_memory.SharedMemory:
    shm = self._open.get((w, slot))
    if shm is not None and shm.name.lstrip('/') != name:
      _release(shm)  # replaced by a larger one
      shm = None
    if shm is None:
      shm = self._open[(w, slot)] = shared_memory.SharedMemory(name=name)
    return shm

  def close(self) -> None:
    """Stops the workers and unlinks every segment they made (idempotent)."""
    if self._closed:
      return
    self._closed = True
    self._stop.set()
    for p in self._procs:
      p.join(_JOIN_S)
      if p.exitcode is None:
        p.kill()
        p.join(_JOIN_S)
    for w, q in enumerate(self._results):
      while True:
        try:
          msg = q.get_nowait()
        except (queue.Empty, OSError, ValueError):
          break
        if msg[0] == 'batch':
          try:
            self._segment(w, msg[2], msg[3])  # to unlink it below
          except FileNotFoundError:
            pass
    for shm in self._open.values():
      _release(shm)
    self._open.clear()
    for q in self._results + self._free:
      q.cancel_join_thread()
      q.close()


def _release(shm: shared_memory.SharedMemory) -> None:
  shm.close()
  try:
    shm.unlink()
  except FileNotFoundError:
    pass


def _error(w: int, data: bytes | None, tb: str) -> BaseException:
  """The worker's exception (its traceback as a note), or a RuntimeError with it."""
  import pickle
  if data is not None:
    e = pickle.loads(data)
    if hasattr(e, 'add_note'):
      e.add_note(f'(raised in loader worker {w})\n{tb}')
    return e
  return RuntimeError(f'loader worker {w} failed:\n{tb}')

