"""ppdet side of tests/parity/test_resnet.py (runs in the ppdet venv; see env.py).

spec.json: {'cases': [{'name', 'kind': 'resnet'|'senet'|'fpn', 'args': {ppdet keyword
arguments}, 'inputs': [keys of inputs.npz], 'seed'}]}. For every case the module is built
directly (ppdet.modeling.backbones.resnet.ResNet, .senet.SENet, ppdet.modeling.necks.fpn.
FPN), its weights drawn at random (ppdet_common.randomize; conv kernels then rescaled to
std 1/sqrt(fan_in) so that activations keep their scale through 150 layers), run in eval
mode on the inputs, and <name>_state.npz (state_dict) and <name>_out.npz (outputs in
order, out0, out1, ...) written.
"""
import warnings

import numpy as np

from ppdet_common import randomize, read_spec, save

warnings.filterwarnings('ignore')


def _build(kind, args):
  if kind == 'resnet':
    from ppdet.modeling.backbones.resnet import ResNet
    return ResNet(**args)
  if kind == 'senet':
    from ppdet.modeling.backbones.senet import SENet
    return SENet(**args)
  if kind == 'fpn':
    from ppdet.modeling.necks.fpn import FPN
    return FPN(**args)
  raise ValueError(kind)


def _rescale_kernels(module, state, std=0.05):
  """randomize's N(0, std) conv kernels -> N(0, 1/fan_in)."""
  import paddle
  new = {}
  for name, value in state.items():
    if value.ndim == 4:  # OIHW conv kernel
      fan_in = int(np.prod(value.shape[1:]))
      new[name] = paddle.to_tensor((value * (fan_in ** -0.5 / std)).astype(value.dtype))
  module.set_state_dict(new)
  return {k: v.numpy() for k, v in module.state_dict().items()}


def main():
  import paddle
  spec, outdir = read_spec()
  paddle.set_device('cpu')
  data = np.load(outdir / 'inputs.npz')
  for case in spec['cases']:
    module = _build(case['kind'], case['args'])
    state = _rescale_kernels(module, randomize(module, case['seed']))
    module.eval()
    inputs = [paddle.to_tensor(data[k]) for k in case['inputs']]
    with paddle.no_grad():
      if case['kind'] == 'fpn':
        outs = module(inputs)
      else:
        outs = module({'image': inputs[0]})
    save(outdir, case['name'] + '_state', **state)
    save(outdir, case['name'] + '_out', **{f'out{i}': o.numpy() for i, o in enumerate(outs)})
    del module, outs, state


if __name__ == '__main__':
  main()
