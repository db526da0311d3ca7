"""detx.weights.paddle against real Paddle 1.x files (written/read by paddlepaddle in
legacy static mode, in a subprocess so FLAGS_enable_pir_api=0 precedes the import)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx.models.backbones.darknet import DarkNet
from detx.models.backbones.resnet import ConvNorm
from detx.models.layers import ConvBN
from detx.weights import paddle as pw

needs_paddle = pytest.mark.skipif(importlib.util.find_spec('paddle') is None,
                                  reason='paddlepaddle not installed')

_SCRIPT = textwrap.dedent('''
    import json, os, sys
    os.environ['FLAGS_enable_pir_api'] = '0'
    import numpy as np
    import paddle
    paddle.enable_static()
    mode, out = sys.argv[1], sys.argv[2]
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.global_scope()
    main, startup = paddle.static.Program(), paddle.static.Program()
    P = paddle.ParamAttr
    if mode == 'write':
      rng = np.random.default_rng(0)
      with paddle.static.program_guard(main, startup):
        x = paddle.static.data('x', [None, 3, 9, 7], 'float32')
        # DarkNet/YOLO dot style: conv + BN + leaky.
        y = paddle.static.nn.conv2d(x, 4, 3, padding=1, bias_attr=False,
                                    param_attr=P(name='yolo_input.conv.weights'))
        y = paddle.static.nn.batch_norm(
            y, is_test=True, param_attr=P(name='yolo_input.bn.scale'),
            bias_attr=P(name='yolo_input.bn.offset'),
            moving_mean_name='yolo_input.bn.mean', moving_variance_name='yolo_input.bn.var')
        y1 = paddle.nn.functional.leaky_relu(y, 0.1)
        # ResNet underscore style: 3x3 stride-2 conv + BN + relu.
        z = paddle.static.nn.conv2d(x, 5, 3, stride=2, padding=1, bias_attr=False,
                                    param_attr=P(name='res2a_branch2a_weights'))
        z = paddle.static.nn.batch_norm(
            z, is_test=True, param_attr=P(name='bn2a_branch2a_scale'),
            bias_attr=P(name='bn2a_branch2a_offset'),
            moving_mean_name='bn2a_branch2a_mean', moving_variance_name='bn2a_branch2a_variance')
        y2 = paddle.nn.functional.relu(z)
        paddle.static.create_parameter([6, 5], 'float32', name='fc6_w')
        paddle.static.create_parameter([3], 'float64', name='x64')
        paddle.static.create_global_var([1], 7, 'int64', persistable=True,
                                        name='@LR_DECAY_COUNTER@')
      exe.run(startup)
      pvars = [v for v in main.list_vars() if v.persistable]
      values = {}
      for v in pvars:
        t = scope.find_var(v.name).get_tensor()
        a = np.array(t)
        if a.dtype.kind == 'f':
          a = rng.normal(size=a.shape).astype(a.dtype)
          if v.name.endswith(('var', 'variance')):
            a = np.abs(a) + 0.5
          t.set(a, paddle.CPUPlace())
        values[v.name] = np.array(t)
      xin = rng.normal(size=(2, 3, 9, 7)).astype('float32')
      o1, o2 = exe.run(main, feed={'x': xin}, fetch_list=[y1, y2])
      paddle.static.io.save_vars(exe, os.path.join(out, 'vars'), main, vars=pvars)
      paddle.static.io.save_vars(exe, os.path.join(out, 'combined'), main, vars=pvars,
                                 filename='__params__')
      np.savez(os.path.join(out, 'values.npz'), **values)
      np.savez(os.path.join(out, 'run.npz'), x=xin, y1=o1, y2=o2)
    else:  # read: load files we wrote, per-variable and combined, through Paddle
      spec = json.load(open(os.path.join(out, 'spec.json')))
      with paddle.static.program_guard(main, startup):
        pvars = [paddle.static.create_global_var(s, 0, d, persistable=True, name=n)
                 for n, (s, d) in spec.items()]
      exe.run(startup)
      paddle.static.io.load_vars(exe, os.path.join(out, 'ours'), main, vars=pvars)
      np.savez(os.path.join(out, 'dir.npz'),
               **{v.name: np.array(scope.find_var(v.name).get_tensor()) for v in pvars})
      paddle.static.io.load_vars(exe, os.path.join(out, 'ours_combined'), main, vars=pvars,
                                 filename='__params__')
      np.savez(os.path.join(out, 'combined.npz'),
               **{v.name: np.array(scope.find_var(v.name).get_tensor()) for v in pvars})
''')


def _run_paddle(tmp_path, mode):
  script = tmp_path / 'paddle_io.py'
  script.write_text(_SCRIPT)
  env = dict(os.environ, FLAGS_enable_pir_api='0', GLOG_minloglevel='2')
  r = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], env=env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope='module')
def paddle_files(tmp_path_factory):
  if importlib.util.find_spec('paddle') is None:
    pytest.skip('paddlepaddle not installed')
  d = tmp_path_factory.mktemp('paddle_written')
  _run_paddle(d, 'write')
  return d


def _npz(path):
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------- reader

def test_reader_matches_paddle_per_variable_files(paddle_files):
  values = _npz(paddle_files / 'values.npz')
  read = pw.load_paddle_dir(paddle_files / 'vars')
  assert set(read) == set(values)
  for name, want in values.items():
    assert read[name].dtype == want.dtype and read[name].shape == want.shape, name
    np.testing.assert_array_equal(read[name], want)
  assert read['@LR_DECAY_COUNTER@'].dtype == np.int64
  assert read['yolo_input.conv.weights'].shape == (4, 3, 3, 3)  # OIHW on disk


def test_reader_matches_paddle_combined_file(paddle_files):
  values = _npz(paddle_files / 'values.npz')
  combined = paddle_files / 'combined' / '__params__'
  read = pw.load_paddle_combined(combined, names=list(values))  # sorted inside
  for name, want in values.items():
    np.testing.assert_array_equal(read[name], want)
  assert len(pw.load_paddle_combined(combined)) == len(values)
  with pytest.raises(pw.PaddleFormatError, match='__params__'):
    pw.load_paddle_combined(combined, names=list(values)[:-1])


@needs_paddle
def test_writer_is_read_by_paddle(tmp_path):
  rng = np.random.default_rng(1)
  arrays = {'conv1_weights': rng.normal(size=(4, 3, 7, 7)).astype(np.float32),
            'bn_conv1_scale': rng.normal(size=(4,)).astype(np.float32),
            'fpn_res2_sum_b': np.arange(3, dtype=np.float64),
            'ids': np.array([[1, -2], [3, 1 << 40]], np.int64)}
  pw.save_paddle_dir(tmp_path / 'ours', arrays)
  os.makedirs(tmp_path / 'ours_combined')
  pw.save_paddle_combined(tmp_path / 'ours_combined' / '__params__', arrays)
  spec = {n: (list(a.shape), str(a.dtype)) for n, a in arrays.items()}
  (tmp_path / 'spec.json').write_text(json.dumps(spec))
  _run_paddle(tmp_path, 'read')
  for f in ('dir.npz', 'combined.npz'):
    got = _npz(tmp_path / f)
    for name, want in arrays.items():
      assert got[name].dtype == want.dtype, (f, name)
      np.testing.assert_array_equal(got[name], want)


def test_descriptor_bytes_and_format_errors(tmp_path):
  # The spec's example: FP32 [64, 3, 7, 7] -> 08 05 10 40 10 03 10 07 10 07.
  assert pw.encode_tensor_desc(5, (64, 3, 7, 7)).hex() == '08051040100310071007'
  assert pw.decode_tensor_desc(bytes.fromhex('08051040100310071007')) == (5, [64, 3, 7, 7])
  assert pw.decode_tensor_desc(bytes.fromhex('0805120440030707')) == (5, [64, 3, 7, 7])  # packed
  f = tmp_path / 'w'
  pw.save_paddle_file(f, np.ones((2, 3), np.float32))
  f.write_bytes(f.read_bytes()[:-1])
  with pytest.raises(pw.PaddleFormatError, match=str(f)):
    pw.load_paddle_file(f)
  (tmp_path / 'p').write_bytes(b'\x80\x04junk')
  with pytest.raises(pw.PaddleFormatError, match='pickle'):
    pw.load_paddle_file(tmp_path / 'p')


# ----------------------------------------------------------------------- name rules

class _Pair(nn.Module):
  """A DarkNet-style ConvBN and a ResNet-style ConvNorm under their Paddle prefixes."""
  norm: str = 'bn'

  @nn.compact
  def __call__(self, x):
    y1 = ConvBN(4, 3, name='yolo_input')(x, train=False)
    y2 = ConvNorm(5, 3, 2, norm=self.norm, name='res2a_branch2a')(x)
    return y1, y2


def test_loads_paddle_numerics(paddle_files):
  run = _npz(paddle_files / 'run.npz')
  x = jnp.asarray(run['x'].transpose(0, 2, 3, 1))
  model = _Pair()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rules = pw.scoped('yolo_input', pw.DARKNET_RULES) + pw.RESNET_RULES
  variables, report = pw.load_paddle_weights(shapes, paddle_files / 'vars', rules)
  assert report.ok and len(report.loaded) == 10
  assert report.ignored == ['@LR_DECAY_COUNTER@']
  assert report.unexpected == ['fc6_w', 'x64']
  y1, y2 = model.apply(variables, x)
  np.testing.assert_allclose(y1, run['y1'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y2, run['y2'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)

  # The same BN weights folded into AffineChannel (Paddle's load_and_fusebn).
  affine = _Pair(norm='affine')
  shapes = jax.eval_shape(lambda: affine.init(jax.random.key(0), x))
  variables, report = pw.load_paddle_weights(shapes, paddle_files / 'vars', rules,
                                             fuse_norm=True)
  assert report.fused == ['bn2a_branch2a']
  _, y2 = affine.apply(variables, x)
  np.testing.assert_allclose(y2, run['y2'].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_load_errors_name_the_file(paddle_files, tmp_path):
  x = jnp.zeros((1, 8, 8, 3))
  model = _Pair()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rules = pw.scoped('yolo_input', pw.DARKNET_RULES) + pw.RESNET_RULES
  arrays = pw.load_paddle_dir(paddle_files / 'vars')
  arrays['bn2a_branch2a_scale'] = np.ones(7, np.float32)
  del arrays['yolo_input.bn.var']
  pw.save_paddle_dir(tmp_path / 'bad', arrays)
  with pytest.raises(pw.WeightLoadError) as e:
    pw.load_paddle_weights(shapes, tmp_path / 'bad', rules)
  msg = str(e.value)
  assert str(tmp_path / 'bad' / 'yolo_input.bn.var') in msg
  assert str(tmp_path / 'bad' / 'bn2a_branch2a_scale') in msg and '(7,)' in msg
  variables, report = pw.load_paddle_weights(shapes, tmp_path / 'bad', rules, strict=False)
  assert [m[0] for m in report.missing] == ['batch_stats/yolo_input/bn/var']
  assert [m[0] for m in report.mismatched] == ['params/res2a_branch2a/bn2a_branch2a/scale']
  assert isinstance(variables['batch_stats']['yolo_input']['bn']['var'], jax.ShapeDtypeStruct)
  # A family without a rule for some variable is an error too.
  with pytest.raises(pw.WeightLoadError, match='unmapped'):
    pw.load_paddle_weights(shapes, paddle_files / 'vars', pw.RESNET_RULES)


def _random_variables(shapes, seed):
  """Random values for an eval_shape'd tree (no jax init: its compiles are slow on CPU);
  positive, so that BN variances are valid."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes)


def test_darknet_round_trip(tmp_path):
  model = DarkNet(depths=(1, 1, 1, 1, 1), width=0.25)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  variables = _random_variables(shapes, 1)
  arrays = pw.export_paddle_weights(variables, pw.DARKNET_RULES)
  assert {'yolo_input.conv.weights', 'yolo_input.bn.offset', 'yolo_input.downsample.bn.var',
          'stage.0.0.0.conv.weights', 'stage.4.0.1.bn.mean', 'stage.3.downsample.bn.scale'
          } <= set(arrays)
  n_vars = len(jax.tree.leaves(variables))
  assert len(arrays) == n_vars
  assert arrays['yolo_input.conv.weights'].shape == (8, 3, 3, 3)  # OIHW
  apply = jax.jit(lambda v: model.apply(v, x, train=False))
  want = apply(variables)
  fresh = _random_variables(shapes, 5)
  pw.save_paddle_weights(variables, tmp_path / 'dir', pw.DARKNET_RULES)
  pw.save_paddle_weights(variables, tmp_path / '__params__', pw.DARKNET_RULES, combined=True)
  for source in (tmp_path / 'dir', tmp_path / '__params__', arrays):
    loaded, report = pw.load_paddle_weights(fresh, source, pw.DARKNET_RULES)
    assert len(report.loaded) == n_vars and not report.unexpected
    for a, b in zip(apply(loaded), want):
      np.testing.assert_array_equal(a, b)


def test_rules_collisions_scoping_and_detectron_names():
  params = {'params': {'backbone': {'conv1': {'conv': {'kernel': np.zeros((7, 7, 3, 64))},
                                              'bn_conv1': {'scale': np.zeros(64),
                                                           'bias': np.zeros(64)}}},
                       'head': {'yolo_output.0': {'conv': {'kernel': np.zeros((1, 1, 8, 9)),
                                                          'bias': np.zeros(9)}},
                                'fpn_res2_sum': {'kernel': np.zeros((3, 3, 4, 4)),
                                                 'bias': np.zeros(4)},
                                'fc6': {'kernel': np.zeros((12, 5)), 'bias': np.zeros(5)}}}}
  rules = (pw.Rule(r'(?P<p>fc6)/kernel', '{p}_w', layout=pw.fc_from_chw(2, 2)),
           *pw.scoped('backbone', pw.RESNET_RULES), *pw.scoped('head', pw.DARKNET_RULES),
           *pw.DETECTRON_RULES)
  mapping, unmapped = pw.paddle_names(params, rules)
  names = {'/'.join(k): n for k, (n, _) in mapping.items()}
  assert not unmapped
  assert names == {
      'params/backbone/conv1/conv/kernel': 'conv1_weights',
      'params/backbone/conv1/bn_conv1/scale': 'bn_conv1_scale',
      'params/backbone/conv1/bn_conv1/bias': 'bn_conv1_offset',
      'params/head/yolo_output.0/conv/kernel': 'yolo_output.0.conv.weights',
      'params/head/yolo_output.0/conv/bias': 'yolo_output.0.conv.bias',
      'params/head/fpn_res2_sum/kernel': 'fpn_res2_sum_w',
      'params/head/fpn_res2_sum/bias': 'fpn_res2_sum_b',
      'params/head/fc6/kernel': 'fc6_w', 'params/head/fc6/bias': 'fc6_b'}
  with pytest.raises(pw.WeightLoadError, match='both map to'):
    pw.paddle_names({'params': {'a': {'conv1': {'conv': {'kernel': 0}}},
                                'b': {'conv1': {'conv': {'kernel': 0}}}}}, pw.RESNET_RULES)


def test_fc_after_chw_flatten_permutation():
  rng = np.random.default_rng(0)
  c, h, w, out = 3, 2, 4, 5
  feat = rng.normal(size=(1, c, h, w))
  paddle_w = rng.normal(size=(c * h * w, out))
  want = feat.reshape(1, -1) @ paddle_w                  # Paddle: CHW flatten
  ours = pw.chw_rows_to_hwc(paddle_w, h, w)
  got = feat.transpose(0, 2, 3, 1).reshape(1, -1) @ ours  # NHWC flatten
  np.testing.assert_allclose(got, want)
  np.testing.assert_array_equal(pw.hwc_rows_to_chw(ours, h, w), paddle_w)
  layout = pw.fc_from_chw(h, w)
  np.testing.assert_array_equal(layout.to_paddle(layout.to_flax(paddle_w)), paddle_w)


def test_deconv_layout_matches_paddle():
  paddle = pytest.importorskip('paddle')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 5, 6)).astype(np.float32)
  w = rng.normal(size=(3, 4, 2, 2)).astype(np.float32)  # conv5_mask: 2x2, stride 2
  want = paddle.nn.functional.conv2d_transpose(
      paddle.to_tensor(x), paddle.to_tensor(w), stride=2).numpy().transpose(0, 2, 3, 1)
  m = nn.ConvTranspose(4, (2, 2), (2, 2), padding='VALID', use_bias=False)
  got = m.apply({'params': {'kernel': pw.DECONV.to_flax(w)}}, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  from detx.models.heads.mask_head import Deconv2x2  # the mask head's conv5_mask
  got = Deconv2x2(4).apply({'params': {'kernel': pw.DECONV.to_flax(w), 'bias': np.zeros(4)}},
                           x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(pw.DECONV.to_paddle(pw.DECONV.to_flax(w)), w)


def test_fuse_bn_formula():
  scale, offset, mean, var = np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([4.0])
  s, b = pw.fuse_bn(scale, offset, mean, var)
  x = np.array([5.0])
  np.testing.assert_allclose(x * s + b, (x - mean) / np.sqrt(var + 1e-5) * scale + offset)


def test_resnet_vd_fpn_names_cover_every_variable():
  from detx.models.backbones.resnet import ResNet
  from detx.models.necks.fpn import FPN
  x = jnp.zeros((1, 64, 64, 3))
  backbone, neck = ResNet(depth=101, variant='d', norm='bn'), FPN()
  bb = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x))
  feats = jax.eval_shape(lambda v: backbone.apply(v, x), bb)
  nk = jax.eval_shape(lambda f: neck.init(jax.random.key(0), f), feats)
  variables = {'params': {'backbone': bb['params'], 'neck': nk['params']},
               'batch_stats': {'backbone': bb['batch_stats']}}
  mapping, unmapped = pw.paddle_names(variables, pw.RESNET_RULES + pw.DETECTRON_RULES)
  assert not unmapped and len(mapping) == len(jax.tree.leaves(variables))
  names = {n for n, _ in mapping.values()}
  assert {'conv1_1_weights', 'bnv1_1_scale', 'bnv1_1_offset', 'bnv1_1_mean',
          'bnv1_1_variance', 'res3a_branch1_weights', 'bn3a_branch1_variance',
          'res4b22_branch2c_weights', 'bn4b22_branch2c_scale', 'res5c_branch2b_weights',
          'fpn_inner_res5_sum_w', 'fpn_inner_res2_sum_lateral_b', 'fpn_res2_sum_w'} <= names
  layouts = {n: lay for n, lay in mapping.values()}
  assert layouts['res5c_branch2b_weights'] is pw.KERNEL and layouts['bnv1_1_mean'] is pw.IDENTITY


def test_record_with_lod_levels(tmp_path):
  import struct
  desc = pw.encode_tensor_desc(2, (3,))
  lod = struct.pack('<3Q', 0, 1, 3)
  rec = (struct.pack('<IQ', 0, 1) + struct.pack('<Q', len(lod)) + lod + struct.pack('<I', 0)
         + struct.pack('<i', len(desc)) + desc + np.array([4, 5, 6], '<i4').tobytes())
  (tmp_path / 'ids').write_bytes(rec)
  np.testing.assert_array_equal(pw.load_paddle_file(tmp_path / 'ids'), [4, 5, 6])
