"""Real Paddle 1.x files for the weight tests: a script run by paddlepaddle in legacy
static mode, in a subprocess so FLAGS_enable_pir_api=0 precedes the import."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

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
    elif mode == 'save':  # arrays.npz -> save_vars dirs 'saved', 'inference' (__params__)
      # and paddle.save's 'saved.pdparams'
      arrays = dict(np.load(os.path.join(out, 'arrays.npz')))
      with paddle.static.program_guard(main, startup):
        pvars = [paddle.static.create_global_var(list(a.shape), 0, str(a.dtype),
                                                 persistable=True, name=n)
                 for n, a in arrays.items()]
      exe.run(startup)
      for n, a in arrays.items():
        scope.find_var(n).get_tensor().set(a, paddle.CPUPlace())
      paddle.static.io.save_vars(exe, os.path.join(out, 'saved'), main, vars=pvars)
      paddle.static.io.save_vars(exe, os.path.join(out, 'inference'), main, vars=pvars,
                                 filename='__params__')
      paddle.disable_static()
      paddle.save({n: paddle.to_tensor(a) for n, a in arrays.items()},
                  os.path.join(out, 'saved.pdparams'))
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


def run_paddle(tmp_path, mode):
  script = tmp_path / 'paddle_io.py'
  script.write_text(_SCRIPT)
  env = dict(os.environ, FLAGS_enable_pir_api='0', GLOG_minloglevel='2')
  r = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], env=env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]


def npz(path):
  with np.load(path) as z:
    return {k: z[k] for k in z.files}
