"""detx.weights.paddle_io against real Paddle 1.x files (written/read by paddlepaddle in
legacy static mode, in a subprocess so FLAGS_enable_pir_api=0 precedes the import)."""
import json
import os
import struct

import numpy as np
import pytest

from detx.weights import paddle_io as pio
from tests.weights.helpers import needs_paddle, npz, run_paddle


# ---------------------------------------------------------------------------- reader

def test_reader_matches_paddle_per_variable_files(paddle_files):
  values = npz(paddle_files / 'values.npz')
  read = pio.load_paddle_dir(paddle_files / 'vars')
  assert set(read) == set(values)
  for name, want in values.items():
    assert read[name].dtype == want.dtype and read[name].shape == want.shape, name
    np.testing.assert_array_equal(read[name], want)
  assert read['@LR_DECAY_COUNTER@'].dtype == np.int64
  assert read['yolo_input.conv.weights'].shape == (4, 3, 3, 3)  # OIHW on disk


def test_reader_matches_paddle_combined_file(paddle_files):
  values = npz(paddle_files / 'values.npz')
  combined = paddle_files / 'combined' / '__params__'
  read = pio.load_paddle_combined(combined, names=list(values))  # sorted inside
  for name, want in values.items():
    np.testing.assert_array_equal(read[name], want)
  assert len(pio.load_paddle_combined(combined)) == len(values)
  with pytest.raises(pio.PaddleFormatError, match='__params__'):
    pio.load_paddle_combined(combined, names=list(values)[:-1])


@needs_paddle
def test_writer_is_read_by_paddle(tmp_path):
  rng = np.random.default_rng(1)
  arrays = {'conv1_weights': rng.normal(size=(4, 3, 7, 7)).astype(np.float32),
            'bn_conv1_scale': rng.normal(size=(4,)).astype(np.float32),
            'fpn_res2_sum_b': np.arange(3, dtype=np.float64),
            'ids': np.array([[1, -2], [3, 1 << 40]], np.int64)}
  pio.save_paddle_dir(tmp_path / 'ours', arrays)
  os.makedirs(tmp_path / 'ours_combined')
  pio.save_paddle_combined(tmp_path / 'ours_combined' / '__params__', arrays)
  spec = {n: (list(a.shape), str(a.dtype)) for n, a in arrays.items()}
  (tmp_path / 'spec.json').write_text(json.dumps(spec))
  run_paddle(tmp_path, 'read')
  for f in ('dir.npz', 'combined.npz'):
    got = npz(tmp_path / f)
    for name, want in arrays.items():
      assert got[name].dtype == want.dtype, (f, name)
      np.testing.assert_array_equal(got[name], want)


def test_descriptor_bytes_and_format_errors(tmp_path):
  # The spec's example: FP32 [64, 3, 7, 7] -> 08 05 10 40 10 03 10 07 10 07.
  assert pio.encode_tensor_desc(5, (64, 3, 7, 7)).hex() == '08051040100310071007'
  assert pio.decode_tensor_desc(bytes.fromhex('08051040100310071007')) == (5, [64, 3, 7, 7])
  assert pio.decode_tensor_desc(bytes.fromhex('0805120440030707')) == (5, [64, 3, 7, 7])  # packed
  f = tmp_path / 'w'
  pio.save_paddle_file(f, np.ones((2, 3), np.float32))
  f.write_bytes(f.read_bytes()[:-1])
  with pytest.raises(pio.PaddleFormatError, match=str(f)):
    pio.load_paddle_file(f)
  (tmp_path / 'p').write_bytes(b'\x80\x04junk')
  with pytest.raises(pio.PaddleFormatError, match='pickle'):
    pio.load_paddle_file(tmp_path / 'p')


def test_record_with_lod_levels(tmp_path):
  desc = pio.encode_tensor_desc(2, (3,))
  lod = struct.pack('<3Q', 0, 1, 3)
  rec = (struct.pack('<IQ', 0, 1) + struct.pack('<Q', len(lod)) + lod + struct.pack('<I', 0)
         + struct.pack('<i', len(desc)) + desc + np.array([4, 5, 6], '<i4').tobytes())
  (tmp_path / 'ids').write_bytes(rec)
  np.testing.assert_array_equal(pio.load_paddle_file(tmp_path / 'ids'), [4, 5, 6])
