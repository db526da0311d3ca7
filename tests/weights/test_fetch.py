"""model.pretrained from a URL, a .tar and a .pdparams (detx.weights.fetch, pdparams):
paddle-written files served from a local http server on 127.0.0.1, cached once, and
hostile files (a pickle that would call os.system, tars that would write outside the
cache) refused with one line."""
import functools
import http.server
import io
import os
import pickle
import tarfile
import threading

import jax
import numpy as np
import pytest

from detx import sharding, train
from detx import errors
from detx.errors import one_line
from detx.models.base import build_model
from detx.weights import fetch, pdparams
from detx.weights import paddle as pw
from tests.helpers import flat_params, tiny_config
from tests.weights.helpers import needs_paddle, run_paddle


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves the server's directory; /cut/NAME sends NAME with a Content-Length 100
  bytes longer than what it sends, then closes (a dropped connection)."""
  requests: list

  def do_GET(self):  # noqa: N802
    self.requests.append(self.path)
    if self.path.startswith('/cut/'):
      body = open(os.path.join(self.directory, self.path[5:]), 'rb').read()
      self.send_response(200)
      self.send_header('Content-Length', str(len(body) + 100))
      self.end_headers()
      self.wfile.write(body)
      self.close_connection = True
      return
    super().do_GET()

  def log_message(self, *args):
    pass


@pytest.fixture
def server(tmp_path):
  root = tmp_path / 'served'
  root.mkdir()
  handler = type('Handler', (_Handler,), {'requests': []})
  httpd = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(handler, directory=str(root)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield root, f'http://127.0.0.1:{httpd.server_address[1]}', handler.requests
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  d = tmp_path / 'cache'
  monkeypatch.setenv('DETX_CACHE', str(d))
  return d


def _files(d):
  return sorted(str(p.relative_to(d)) for p in d.rglob('*')) if d.exists() else []


def _tiny_state(tmp_path, seed=0):
  c = tiny_config(tmp_path, **{'seed': seed})
  module, rules = build_model(c)
  tx, _ = train.make_optimizer(c, rules)
  return c, train.init_state(c, module, tx, sharding.make_mesh()), rules


def _paddle_written(tmp_path, rules, state):
  """The tiny model's variables written by paddlepaddle: (save_vars dir, .pdparams)."""
  arrays = pw.export_paddle_weights(jax.device_get(state.variables()), rules.paddle)
  np.savez(tmp_path / 'arrays.npz', **arrays)
  run_paddle(tmp_path, 'save')
  return tmp_path / 'saved', tmp_path / 'saved.pdparams'


def _assert_loaded(loaded, want):
  for tree in ('params', 'batch_stats'):
    a, b = flat_params(getattr(want, tree)), flat_params(getattr(loaded, tree))
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(b[k], a[k], err_msg=k)


@needs_paddle
def test_url_of_a_paddle_tar_and_a_pdparams(tmp_path, server, cache, capsys):
  root, url, requests = server
  _, want, rules = _tiny_state(tmp_path)
  saved, pdp = _paddle_written(tmp_path, rules, want)
  with tarfile.open(root / 'tiny_pretrained.tar', 'w') as tar:
    tar.add(saved, arcname='tiny_pretrained')  # as released: one top-level directory
  os.replace(pdp, root / 'tiny.pdparams')
  for name in ('tiny_pretrained.tar', 'tiny.pdparams'):
    c, fresh, _ = _tiny_state(tmp_path, seed=5)
    c.model.pretrained = f'{url}/{name}'
    a, b = flat_params(fresh.params), flat_params(want.params)
    assert not all(np.array_equal(a[k], b[k]) for k in a)  # another init to overwrite
    _assert_loaded(train.load_pretrained(c, fresh, rules), want)
    _assert_loaded(train.load_pretrained(c, fresh, rules), want)  # from the cache
    assert requests.count(f'/{name}') == 1
    assert f'pretrained from {url}/{name}: loaded ' in capsys.readouterr().out
  assert (cache / 'downloads' / 'tiny_pretrained.tar').is_file()
  [unpacked] = (cache / 'extracted').iterdir()
  assert unpacked.name.startswith('tiny_pretrained-') and (unpacked / 'tiny_pretrained').is_dir()
  assert not [f for f in _files(cache) if '.part' in f or f.startswith('.')]
  # an inference model directory: one combined __params__ file
  c, fresh, _ = _tiny_state(tmp_path, seed=5)
  c.model.pretrained = str(tmp_path / 'inference')
  assert sorted(os.listdir(tmp_path / 'inference')) == ['__params__']
  _assert_loaded(train.load_pretrained(c, fresh, rules), want)


def test_truncated_and_wrong_hash_keep_nothing(tmp_path, server, cache):
  root, url, _ = server
  (root / 'w.tar').write_bytes(os.urandom(5000))
  with pytest.raises(pw.WeightLoadError) as e:
    fetch.download(f'{url}/cut/w.tar')
  assert 'truncated (5000 of 5100 bytes)' in str(e.value) and '\n' not in one_line(e.value)
  assert _files(cache / 'downloads') == []
  with pytest.raises(pw.WeightLoadError, match=r'sha256 is [0-9a-f]{64}, the URL names 0+;'):
    fetch.download(f'{url}/w.tar#sha256={"0" * 64}')
  assert _files(cache / 'downloads') == []
  import hashlib
  good = hashlib.md5((root / 'w.tar').read_bytes()).hexdigest()
  assert fetch.download(f'{url}/w.tar#md5={good}').read_bytes() == (root / 'w.tar').read_bytes()
  assert _files(cache / 'downloads') == ['w.tar']


def test_unreachable_url_says_how_to_go_on(tmp_path, cache, capsys):
  c, state, rules = _tiny_state(tmp_path)
  c.model.pretrained = 'http://127.0.0.1:9/ResNet50_cos_pretrained.tar'  # discard port
  with pytest.raises(pw.WeightLoadError) as e:
    train.load_pretrained(c, state, rules)
  msg = one_line(e.value)
  assert 'cannot download http://127.0.0.1:9/ResNet50_cos_pretrained.tar' in msg
  assert str(cache / 'downloads' / 'ResNet50_cos_pretrained.tar') in msg
  assert "--config.model.pretrained=''" in msg
  # the command lines' guard: that one line on stderr, exit code 2, no traceback
  assert errors.guard(lambda: train.load_pretrained(c, state, rules)) == 2
  assert capsys.readouterr().err == f'detx: {msg}\n'


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_pdparams_that_would_run_code_is_refused(tmp_path):
  marker = tmp_path / 'ran'
  evil = tmp_path / 'evil.pdparams'
  evil.write_bytes(pickle.dumps({'w': np.zeros(3, np.float32), 'x': _Evil(marker)}, protocol=2))
  assert pickle.loads(evil.read_bytes().replace(b'touch', b'true '))  # it would run
  with pytest.raises(pw.WeightLoadError) as e:
    pdparams.load_pdparams(evil)
  assert not marker.exists()
  assert one_line(e.value).startswith(f'{evil}: refused as a .pdparams file')
  assert 'it would call posix.system' in str(e.value)
  # data-only pickles of both protocols load, object arrays do not
  arrays = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.ones(2, np.int64)}
  for protocol in (2, 4):
    (tmp_path / 'ok.pdparams').write_bytes(pickle.dumps(arrays, protocol=protocol))
    got = pdparams.load_pdparams(tmp_path / 'ok.pdparams')
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in got)
  (tmp_path / 'obj.pdparams').write_bytes(pickle.dumps({'a': np.array([None, 1])}))
  with pytest.raises(pw.WeightLoadError, match='object dtype'):
    pdparams.load_pdparams(tmp_path / 'obj.pdparams')


def _tar_with(path, member: tarfile.TarInfo, data=b'x'):
  with tarfile.open(path, 'w') as tar:
    ok = tarfile.TarInfo('w/fc_w')
    ok.size = 1
    tar.addfile(ok, io.BytesIO(b'x'))
    tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def test_hostile_tar_members_are_refused(tmp_path, cache):
  outside = tmp_path / 'outside'
  cases = {'dotdot': ('w/../../../outside', tarfile.REGTYPE, 'a ".." component'),
           'absolute': (str(outside), tarfile.REGTYPE, 'an absolute path'),
           'symlink': ('w/link', tarfile.SYMTYPE, 'a link')}
  for name, (member_name, kind, problem) in cases.items():
    m = tarfile.TarInfo(member_name)
    m.type = kind
    m.size = 1 if kind == tarfile.REGTYPE else 0
    m.linkname = str(outside) if kind == tarfile.SYMTYPE else ''
    _tar_with(tmp_path / f'{name}.tar', m)
    with pytest.raises(pw.WeightLoadError) as e:
      fetch.resolve(tmp_path / f'{name}.tar')
    assert one_line(e.value) == (f'{tmp_path / name}.tar: member {member_name!r} is refused '
                                 f'({problem}); weight archives hold plain files only')
    assert not outside.exists()
    assert _files(cache / 'extracted') == []


def test_tars_of_one_name_unpack_apart(tmp_path, cache):
  dirs = []
  for i in (1, 2):
    (tmp_path / f'd{i}').mkdir()
    pw.save_paddle_dir(tmp_path / f'src{i}' / 'w', {'fc_w': np.full((2,), i, np.float32)})
    with tarfile.open(tmp_path / f'd{i}' / 'w.tar', 'w') as tar:
      tar.add(tmp_path / f'src{i}' / 'w', arcname='w')
    dirs.append(fetch.resolve(tmp_path / f'd{i}' / 'w.tar'))
  assert dirs[0] != dirs[1] and fetch.resolve(tmp_path / 'd1' / 'w.tar') == dirs[0]
  assert [pw.load_paddle_file(d / 'fc_w')[0] for d in dirs] == [1, 2]
