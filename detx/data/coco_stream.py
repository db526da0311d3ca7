"""Reading a COCO json's top-level arrays one item at a time, in bounded memory.

``json.load`` of a COCO annotation file holds every image and annotation as Python
objects at once (a 35 MB file of 20k images and 130k annotations: ~250 MB). Here
the file is read in chunks and each item of the wanted top-level arrays
("images", "annotations", "categories") is decoded alone with
``json.JSONDecoder.raw_decode``: memory is one chunk plus the largest item. Other
top-level values ("info", "licenses") are decoded and dropped.

The items are exactly what ``json.load`` gives (same decoder). Malformed JSON
raises one DataError naming the file, line, column, byte offset and the array
item being read; so does text that is not UTF-8.
"""
from __future__ import annotations

import codecs
import json
from json.decoder import WHITESPACE
from pathlib import Path
from typing import Any, Iterator

from detx.data.bad_data import DataError

CHUNK = 1 << 20
# A decode error this near the end of the buffer may only mean the item is cut
# there (a number, literal or \\uXXXX escape): read more and retry.
_TAIL = 16


class _Text:
  """A window on the file's decoded text that knows the global position of its
  start (characters, bytes, lines) for error messages."""

  def __init__(self, f, path: Path, chunk: int):
    self._f, self.path, self._chunk = f, path, chunk
    self._decoder = codecs.getincrementaldecoder('utf-8')('surrogatepass')
    self.buf, self.pos, self.eof = '', 0, False
    self._bytes_read = 0          # bytes fed to the decoder
    self._chars = self._bytes = self._lines = 0  # dropped from buf's front
    self._last_newline = -1       # global character index of the last dropped '\n'
    self.where = ''               # the item being read, for error messages

  def more(self, at_least: int = 0) -> bool:
    """Appends at least one chunk (and `at_least` bytes) of text; False at EOF."""
    if self.eof:
      return False
    data = self._f.read(max(self._chunk, at_least, 3))  # 3: a whole BOM
    self.eof = not data
    if self._bytes_read == 0 and data.startswith(codecs.BOM_UTF8):
      data, self._bytes = data[3:], 3  # json.load(binary file) skips it too
      self._bytes_read = 3
    pending = len(self._decoder.getstate()[0])  # an unfinished character's bytes
    try:
      text = self._decoder.decode(data, final=self.eof)
    except UnicodeDecodeError as e:
      raise DataError(f'malformed JSON in annotation file {self.path}: not UTF-8 '
                      f'text (byte {self._bytes_read - pending + e.start})') from None
    self._bytes_read += len(data)
    # Positions into buf stay valid unless more text came (the callers then
    # decode again): only then is the consumed head dropped.
    head = '' if self.eof else self.buf[:self.pos]
    if head:
      self._lines += head.count('\n')
      k = head.rfind('\n')
      if k >= 0:
        self._last_newline = self._chars + k
      self._chars += len(head)
      self._bytes += len(head.encode('utf-8', 'surrogatepass'))
      self.buf, self.pos = self.buf[self.pos:], 0
    self.buf += text
    return not self.eof

  def fail(self, msg: str, pos: int):
    """Raises the DataError of a decode error at buf[pos]."""
    line = self._lines + self.buf.count('\n', 0, pos) + 1
    k = self.buf.rfind('\n', 0, pos)
    col = pos - k if k >= 0 else self._chars + pos - self._last_newline
    byte = self._bytes + len(self.buf[:pos].encode('utf-8', 'surrogatepass'))
    where = f', in {self.where}' if self.where else ''
    raise DataError(f'malformed JSON in annotation file {self.path} at line {line}, '
                    f'column {col} (byte {byte}{where}): {msg}')

  def peek(self) -> str:
    """The next non-whitespace character ('' at the end of the file)."""
    while True:
      self.pos = WHITESPACE.match(self.buf, self.pos).end()
      if self.pos < len(self.buf) or not self.more():
        return self.buf[self.pos:self.pos + 1]

  def expect(self, chars: str, msg: str) -> str:
    c = self.peek()
    if not c or c not in chars:
      self.fail(msg, self.pos)
    self.pos += 1
    return c

  def value(self, decoder: json.JSONDecoder) -> Any:
    """Decodes the JSON value at the current position."""
    self.peek()
    while True:
      try:
        obj, end = decoder.raw_decode(self.buf, self.pos)
      except json.JSONDecodeError as e:
        cut = e.msg.startswith('Unterminated string') or e.pos >= len(self.buf) - _TAIL
        if cut and self.more(len(self.buf) - self.pos):
          continue
        self.fail(e.msg, e.pos)
      # A number that ends the buffer may go on in the next chunk.
      if end < len(self.buf) or not self.more():
        self.pos = end
        return obj


def iter_arrays(path, keys=('images', 'annotations', 'categories'),
                chunk: int | None = None, found: set | None = None
                ) -> Iterator[tuple[str, int, Any]]:
  """Yields (key, index, item) for each item of the top-level arrays `keys` of the
  JSON object in `path`, in file order, and adds to `found` the keys whose value
  is an array (empty ones too). Raises DataError for malformed JSON (also after the last item:
  the whole file is checked), a top level that is not an object, or a key of
  `keys` given twice."""
  path = Path(path)
  decoder = json.JSONDecoder()
  try:
    f = open(path, 'rb')  # pylint: disable=consider-using-with
  except OSError as e:
    raise DataError(f'cannot read annotation file {path}: {e}') from None
  with f:
    t = _Text(f, path, chunk or CHUNK)
    try:
      yield from _object(t, decoder, keys, set() if found is None else found)
    except OSError as e:
      raise DataError(f'cannot read annotation file {path}: {e}') from None


def _object(t: _Text, decoder, keys, found: set):
  if t.peek() != '{':
    top = t.value(decoder)  # raises for malformed JSON
    _end(t)
    raise DataError(f'annotation file {t.path}: expected a JSON object with '
                    f'"images", "annotations" and "categories", not {type(top).__name__}')
  t.pos += 1
  seen = set()
  if t.peek() == '}':
    t.pos += 1
  else:
    while True:
      if t.peek() != '"':
        t.fail('Expecting property name enclosed in double quotes', t.pos)
      key = t.value(decoder)
      t.expect(':', "Expecting ':' delimiter")
      if key in keys and key in seen:
        raise DataError(f'annotation file {t.path}: the key "{key}" appears twice')
      seen.add(key)
      if key in keys and t.peek() == '[':
        found.add(key)
        yield from _array(t, decoder, key)
      else:
        t.where = f'"{key}"'
        t.value(decoder)  # dropped
        t.where = ''
      if t.expect(',}', "Expecting ',' delimiter") == '}':
        break
  _end(t)


def _array(t: _Text, decoder, key):
  t.pos += 1
  if t.peek() == ']':
    t.pos += 1
    return
  i = 0
  while True:
    t.where = f'"{key}" item {i}'
    item = t.value(decoder)
    yield key, i, item
    del item
    i += 1
    if t.expect(',]', "Expecting ',' delimiter") == ']':
      break
  t.where = ''


def _end(t: _Text):
  if t.peek():
    t.fail('Extra data', t.pos)
