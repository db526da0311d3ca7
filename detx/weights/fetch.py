"""Where model.pretrained's weights come from: a local path, or an http(s) URL
downloaded once into the cache; a .tar is unpacked into the cache.

Cache: $DETX_CACHE, else ~/.cache/detx. A URL goes to CACHE/downloads/<file name>
(a progress bar on stderr), written to a temporary file that is renamed only when it
is complete: its size must match Content-Length, and its hash the one the URL names in
a fragment (`...tar#md5=<hex>` or `#sha256=<hex>`). A .tar is unpacked to
CACHE/extracted/<name>-<hash of its path, size and mtime>/ the same way (a temporary
directory renamed when complete); a member with an absolute path, a `..` component, a
link or a device is refused. Every failure is a WeightLoadError of one line naming the
file or URL.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from detx.weights.paddle import WeightLoadError

RANDOM_INIT = "or pass --config.model.pretrained='' to start from random weights"


def cache_dir() -> Path:
  return Path(os.environ.get('DETX_CACHE') or '~/.cache/detx').expanduser()


def is_url(source) -> bool:
  return str(source).startswith(('http://', 'https://'))


def _split_hash(url: str) -> tuple[str, str, str]:
  """(url without fragment, hash algorithm or '', expected hex digest or '')."""
  base, _, fragment = url.partition('#')
  algo, _, digest = fragment.partition('=')
  if fragment and (algo not in ('md5', 'sha256') or not digest):
    raise WeightLoadError(f'{url}: the fragment names a hash as #md5=<hex> or #sha256=<hex>')
  return base, algo, digest.lower()


class _Progress:

  def __init__(self, name: str, total: int):
    self.name, self.total, self.last = name, total, 0.0
    self.tty = sys.stderr.isatty()

  def update(self, done: int, final: bool = False):
    now = time.monotonic()
    if not final and now - self.last < (0.2 if self.tty else 5.0):
      return
    self.last = now
    mb = done / 2**20
    if self.total:
      frac = done / self.total
      bar = '#' * int(30 * frac)
      text = f'{self.name} [{bar:<30}] {mb:.1f}/{self.total / 2**20:.1f} MiB'
    else:
      text = f'{self.name} {mb:.1f} MiB'
    end = '\n' if final or not self.tty else ''
    print(('\r' if self.tty else '') + text, end=end, file=sys.stderr, flush=True)


def download(url: str, timeout: float = 60.0) -> Path:
  """The cached file of `url`, downloaded first when it is not in the cache."""
  base, algo, digest = _split_hash(url)
  name = Path(urllib.parse.urlparse(base).path).name or 'download'
  target = cache_dir() / 'downloads' / name
  if target.is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  hasher = hashlib.new(algo) if algo else None
  fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.part', dir=target.parent)
  try:
    with os.fdopen(fd, 'wb') as out:
      try:
        with urllib.request.urlopen(base, timeout=timeout) as response:
          total = int(response.headers.get('Content-Length') or 0)
          progress, done = _Progress(name, total), 0
          while True:
            chunk = response.read(1 << 20)
            if not chunk:
              break
            out.write(chunk)
            if hasher:
              hasher.update(chunk)
            done += len(chunk)
            progress.update(done)
          progress.update(done, final=True)
      except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, 'reason', None) or e
        raise WeightLoadError(
            f'cannot download {base} ({" ".join(str(reason).split())}): download it '
            f'yourself to {target} and run again, {RANDOM_INIT}') from None
    if total and done != total:
      raise WeightLoadError(f'{base}: download truncated ({done} of {total} bytes); '
                            f'nothing was kept in {target.parent}, run again to retry')
    if hasher and hasher.hexdigest() != digest:
      raise WeightLoadError(f'{base}: {algo} is {hasher.hexdigest()}, the URL names '
                            f'{digest}; nothing was kept in {target.parent}')
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return target


def _check_member(tar_path, member: tarfile.TarInfo) -> None:
  parts = Path(member.name).parts
  problem = None
  if member.name.startswith(('/', '\\')) or Path(member.name).is_absolute():
    problem = 'an absolute path'
  elif '..' in parts or '..' in member.name.replace('\\', '/').split('/'):
    problem = 'a ".." component'
  elif member.issym() or member.islnk():
    problem = 'a link'
  elif not (member.isfile() or member.isdir()):
    problem = 'not a plain file or directory'
  if problem:
    raise WeightLoadError(f'{tar_path}: member {member.name!r} is refused ({problem}); '
                          'weight archives hold plain files only')


def extract_tar(tar_path) -> Path:
  """CACHE/extracted/<tar name>-<key>/ (unpacked first unless it is there): the directory that
  holds the variables (the archive's single top-level directory, as released)."""
  tar_path = Path(tar_path).resolve()
  name = tar_path.name[:-len('.tar.gz')] if tar_path.name.endswith('.tar.gz') else tar_path.stem
  stat = tar_path.stat()  # another file of the same name is another entry
  key = hashlib.sha1(f'{tar_path}:{stat.st_size}:{stat.st_mtime_ns}'.encode()).hexdigest()
  target = cache_dir() / 'extracted' / f'{name}-{key[:10]}'
  if not target.is_dir():
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.', dir=target.parent))
    try:
      try:
        with tarfile.open(tar_path) as tar:
          members = tar.getmembers()
          for m in members:  # every member checked before anything is written
            _check_member(tar_path, m)
          for m in members:
            dest = tmp.joinpath(*Path(m.name).parts)
            if m.isdir():
              dest.mkdir(parents=True, exist_ok=True)
              continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(dest, 'wb') as out:
              shutil.copyfileobj(src, out)
      except (tarfile.TarError, EOFError, OSError) as e:
        raise WeightLoadError(f'{tar_path}: not a readable .tar ({e})') from None
      os.replace(tmp, target)
    finally:
      if tmp.exists():
        shutil.rmtree(tmp)
  entries = [p for p in target.iterdir() if not p.name.startswith('.')]
  return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def resolve(source) -> Path:
  """A local path for model.pretrained: URLs downloaded, .tar files unpacked."""
  path = download(str(source)) if is_url(source) else Path(source).expanduser()
  if path.is_file() and (path.name.endswith(('.tar', '.tar.gz', '.tgz'))):
    return extract_tar(path)
  return path
