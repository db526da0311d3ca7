"""Every configs/*.py: loads, states its command and expectation, builds its model and
runs one optimizer step and one evaluation step on a tiny synthetic batch.

Each config's real model is built and its parameters created abstractly
(jax.eval_shape: every layer, with the real depth and names). The steps then run the same
model with one block per ResNet / SENet stage (depth 101 too: its rows then compile
the program of their R50 twin, a hit in the shared compilation cache) and, for
YOLOv3, a narrow DarkNet or MobileNet and head, at data.max_size 128 with small proposal /
RoI / NMS counts, compiled with XLA's cheap CPU settings: compile time dominates at this
size. Configs with equal models (the 1x / 2x pairs) share one compilation.
"""
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from detx import config as cfg
from detx import schedules
from detx.data.transforms import rcnn as T
from detx.models.base import build_model
from detx.models.backbones import resnet
from detx.train import make_optimizer
from detx.weights import paddle as pw
from tests.helpers import FAST_COMPILE

CONFIGS = sorted(p.stem for p in cfg.CONFIG_DIR.glob('*.py'))
ZOO_MD = Path(__file__).parents[1].parent / 'shared/reference/ZOO.md'
RCNN = ('faster_rcnn', 'mask_rcnn', 'cascade_rcnn')
RCNN_PIPELINE = RCNN + ('retinanet',)  # models fed by the R-CNN data pipeline
# Init and eval steps run little compute: XLA's cheapest CPU compile. The train step's
# backward pass is heavier (the C4 res5 head): keep the backend optimisations for it.
TRAIN_COMPILE = {'xla_llvm_disable_expensive_passes': True}
STANDARD_KEYS = ('data.dir', 'data.train_split', 'data.train_limit', 'data.max_size',
                 'eval.split', 'eval.limit', 'train.steps', 'train.batch_size', 'train.stop_at',
                 'train.log_every', 'train.checkpoint_every', 'eval.every', 'seed')


def _get(c, dotted):
  for k in dotted.split('.'):
    c = c[k]
  return c


def _zoo_rows():
  """{config name: box AP} from reference/ZOO.md's tables (first AP column)."""
  if not ZOO_MD.is_file():
    return {}
  rows = {}
  for line in ZOO_MD.read_text().splitlines():
    cells = [x.strip() for x in line.strip().strip('|').split('|')]
    if len(cells) >= 3 and re.fullmatch(r'[a-z0-9_]+', cells[0]):
      nums = [x for x in cells[1:] if re.fullmatch(r'\d+\.\d+', x)]
      if nums:
        rows[cells[0]] = nums[0]
  return rows


SHALLOW_BLOCKS = {34: (1, 1, 1, 1), 50: (1, 1, 1, 1), 101: (1, 1, 1, 1), 152: (1, 1, 1, 1)}


def _tiny(c):
  c.data.max_size = 128
  if c.model.name == 'yolov3':
    c.model.backbone.depths = (1, 1, 1, 1, 1)
    c.model.backbone.width = 0.25  # DarkNet and the YOLO head
    c.model.backbone.scale = 0.25  # MobileNet
  if c.model.name in RCNN:
    c.model.rpn.update(train_pre_nms_top_n=256, train_post_nms_top_n=128,
                       train_collect_top_n=128, test_pre_nms_top_n=128,
                       test_post_nms_top_n=64, test_collect_top_n=64)
    c.model.roi.batch_size_per_im = 16
    c.model.nms.update(max_candidates=256, keep_top_k=10)
  if c.model.name == 'retinanet':
    c.model.nms.update(pre_nms_top_n=100, keep_top_k=10)
  return c


def _rcnn_batch(c, b=2, g=4):
  h, w = 96, 128
  boxes = np.zeros((b, g, 4), np.float32)
  boxes[:, 0] = [8, 10, 60, 50]
  boxes[:, 1] = [30, 20, 100, 90]
  boxes[:, 2] = [5, 40, 40, 92]
  scale = np.array([0.2, 0.25][:b], np.float32)
  polys = np.zeros((b, g, 8, 2), np.float32)
  ids = np.full((b, g, 8), -1, np.int32)
  for i in range(b):  # each GT's polygon: its box, in original pixels
    T.box_polygons(boxes[i, :3] / scale[i], polys[i], ids[i])
  return {
      'image': jnp.asarray(np.random.default_rng(0).normal(size=(b, h, w, 3)), jnp.float32),
      'image_hw': jnp.array([[96, 128], [90, 120]][:b], jnp.int32),
      'scale': jnp.asarray(scale),
      'boxes': jnp.asarray(boxes),
      'classes': jnp.array([[1, 5, 7, 0]] * b, jnp.int32),
      'is_crowd': jnp.zeros((b, g), bool).at[:, 2].set(True),
      'box_mask': jnp.array([[1, 1, 1, 0]] * b, bool),
      'gt_polys': jnp.asarray(polys),
      'gt_poly_ids': jnp.asarray(ids),
      'orig_size': jnp.array([[480, 640], [360, 480]][:b], jnp.int32),
  }


def _yolo_batch(c, b=2, g=4):
  return {
      'image': jnp.zeros((b, 64, 64, 3)),
      'boxes': jnp.tile(jnp.array([0.1, 0.1, 0.5, 0.6]), (b, g, 1)),
      'classes': jnp.zeros((b, g), jnp.int32),
      'scores': jnp.ones((b, g)),
      'box_mask': jnp.arange(g)[None].repeat(b, 0) < 2,
      'orig_size': jnp.array([[100, 200], [50, 60]], jnp.int32),
  }


_CACHE = {}


def _compiled(c):
  """Initial variables and the compiled train / eval steps of a config's model, shared by
  configs whose models and optimizer settings are equal."""
  module, rules = build_model(c)
  key = (repr(module), c.optim.weight_decay, c.optim.momentum)
  if key not in _CACHE:
    _CACHE.clear()  # consecutive configs share; keep memory flat
    _CACHE[key] = _compile(c, module, rules)
  return _CACHE[key]


def _compile(c, module, rules):
  batch = _rcnn_batch(c) if c.model.name in RCNN_PIPELINE else _yolo_batch(c)
  train_b = {k: batch[k] for k in module.TRAIN_KEYS}
  eval_b = {k: batch[k] for k in module.EVAL_KEYS}
  tx, lr_fn = make_optimizer(c, rules)
  init_method = getattr(type(module), 'init_params', None)

  def init(key):
    if init_method is not None:
      v = module.init(key, batch['image'], method=init_method)
    else:
      v = module.init(key, batch, train=False)
    return {'params': v['params'], 'batch_stats': v.get('batch_stats', {})}

  def train_step(variables, opt_state, b, key):
    def loss_fn(p):
      losses, upd = module.apply({'params': p, 'batch_stats': variables['batch_stats']}, b,
                                 train=True, mutable=['batch_stats'], rngs={'sample': key})
      return losses['loss'], (losses, upd)
    (_, (losses, upd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    updates, opt_state = tx.update(grads, opt_state, variables['params'])
    params = jax.tree.map(lambda p, u: p - 0.01 * u, variables['params'], updates)
    return {'params': params, 'batch_stats': upd.get('batch_stats', {})}, opt_state, losses

  def eval_step(variables, b):
    return module.apply(variables, b, train=False)

  key = jax.random.key(0)
  init_c = jax.jit(init).lower(key).compile(compiler_options=FAST_COMPILE)
  variables = init_c(key)
  opt_state = tx.init(variables['params'])
  train_c = jax.jit(train_step).lower(variables, opt_state, train_b, key).compile(
      compiler_options=TRAIN_COMPILE)
  eval_c = jax.jit(eval_step).lower(variables, eval_b).compile(compiler_options=FAST_COMPILE)
  return module, rules, tx, variables, train_b, eval_b, train_c, eval_c


@pytest.mark.parametrize('name', CONFIGS)
def test_config(name):
  c = cfg.load(name)
  for key in STANDARD_KEYS:
    _get(c, key)
  doc = cfg.CONFIG_DIR.joinpath(f'{name}.py').read_text()
  assert f'python -m detx.main --config=configs/{name}.py' in doc
  ap = _zoo_rows().get(name)
  if ap is not None:
    assert ap in doc.split('"""')[1], f'{name}: the docstring should state the zoo AP {ap}'
  if c.model.name in RCNN:
    _check_rcnn_schedule(c)
  if c.model.name == 'retinanet':
    _check_retinanet_schedule(c)
  module, rules = build_model(c)
  _check_real_params(c, module, rules.paddle)

  c = _tiny(c)
  with pytest.MonkeyPatch.context() as mp:
    for depth, blocks in SHALLOW_BLOCKS.items():
      mp.setitem(resnet.BLOCKS, depth, blocks)
    module, rules, tx, variables, train_b, eval_b, train_c, eval_c = _compiled(c)
  new_vars, _, losses = train_c(variables, tx.init(variables['params']), train_b,
                                jax.random.key(1))
  losses = jax.device_get(losses)
  assert np.isfinite(losses['loss']), losses
  dets = jax.device_get(eval_c(new_vars, eval_b))
  k = dets['valid'].shape[1]
  assert dets['boxes'].shape == (2, k, 4) and dets['scores'].shape == (2, k)
  assert dets['classes'].shape == (2, k)
  if getattr(module, 'HAS_MASKS', False):
    assert dets['masks'].shape[:2] == (2, k)
  if c.model.name in RCNN_PIPELINE:
    _check_frozen(c, variables['params'], new_vars['params'])


def _check_real_params(c, module, paddle_rules):
  """Abstract init of the full model: its size and Paddle's layer names, every variable
  named by the family's Paddle rules."""
  batch = _rcnn_batch(c) if c.model.name in RCNN_PIPELINE else _yolo_batch(c)
  if c.model.name in RCNN_PIPELINE:
    init = lambda: module.init(jax.random.key(0), batch['image'], method=type(module).init_params)
  else:
    init = lambda: module.init(jax.random.key(0), batch, train=False)
  variables = jax.eval_shape(init)
  mapping, unmapped = pw.paddle_names(variables, paddle_rules)
  assert not unmapped, unmapped[:5]
  paddle_names = {name for name, _ in mapping.values()}
  params = variables['params']
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert n > 0
  names = {'/'.join(str(getattr(k, 'key', k)) for k in path)
           for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  joined = '\n'.join(names)
  b = c.model.backbone
  # Paddle's name of each backbone's last layer (C4: res5 is the box head's)
  last = {'resnet': lambda: 'res5c_branch2c/' if b.depth >= 50 else 'res5c_branch2b/',
          'senet': lambda: f'fc7_{resnet.BLOCKS[b.depth][3]}_exc/',
          'mobilenet': lambda: 'conv6_sep/',
          'darknet': lambda: f'stage.{len(b.depths) - 1}.{b.depths[-1] - 1}.1/'}[b.name]()
  assert last in joined, (b.name, last)
  first = {'senet': 'fc4_1_sqz_offset', 'mobilenet': 'conv2_1_dw_bn_scale',
           'darknet': 'yolo_input.conv.weights'}.get(b.name, 'res2a_branch2a_weights')
  assert first in paddle_names, first
  res5_in_backbone = c.model.neck.name == 'fpn' or c.model.name == 'yolov3'
  assert ('backbone/res5/' in joined) == (b.name in ('resnet', 'senet') and res5_in_backbone)
  if b.name in ('resnet', 'senet') and b.groups > 1:  # ResNeXt / SENet: 64 groups of 4
    stage2 = params['backbone']['res2']
    first = stage2['res2a']['res2a_branch2b'] if b.name == 'resnet' else stage2['4_1']['conv4_1_x2']
    assert first['conv']['kernel'].shape == (3, 3, b.group_width, b.groups * b.group_width)
  if c.model.name not in RCNN_PIPELINE:
    return
  assert n > 30e6, n
  fpn = c.model.name in RCNN and c.model.neck.name == 'fpn'  # R-CNN FPN (not C4)
  assert ('conv1_1/' in joined) == (b.variant == 'd')
  assert ('res4b22_branch2c' in joined) == (b.depth == 101)
  assert ('rpn_cls_logits_fpn2' in joined) == fpn
  assert ('retnet_cls_pred_fpn3' in joined) == (c.model.name == 'retinanet')
  assert ('fpn_7/' in joined) == (c.model.name == 'retinanet')
  assert ('res5a_branch2a' in joined) == (b.name == 'resnet' or not fpn)  # or C4's head
  assert ('conv6_36_x3_bn' in joined) == (b.name == 'senet' and b.depth == 152)
  assert ('mask_fcn_logits' in joined) == (c.model.name == 'mask_rcnn')
  assert ('mask_inter_feat_4' in joined) == (c.model.name == 'mask_rcnn' and fpn)
  assert ('fc6_3/' in joined) == (c.model.name == 'cascade_rcnn')  # not SE's fc6_3_sqz


def _check_rcnn_schedule(c):
  """lr proportional to the batch (0.02 at 16), and the preset's images seen."""
  assert c.optim.base_lr == pytest.approx(0.02 * c.train.batch_size / 16)
  ref_steps, _, _, _ = schedules.PRESETS[c.optim.schedule.preset]
  ref_batch = 16 if c.optim.schedule.preset in ('1x', '2x') else 8
  assert c.train.steps * c.train.batch_size == ref_steps * ref_batch
  assert c.optim.weight_decay == 1e-4 and c.optim.momentum == 0.9


def _check_retinanet_schedule(c):
  """RetinaNet: lr 0.01 at batch 16 (half the R-CNN rate, ZOO.md), the 1x schedule."""
  assert c.optim.base_lr == pytest.approx(0.01 * c.train.batch_size / 16)
  assert c.optim.schedule.preset == '1x' and c.train.steps * c.train.batch_size == 90000 * 16
  assert c.optim.weight_decay == 1e-4 and c.optim.momentum == 0.9
  assert c.data.pad_multiple == 128


def _check_frozen(c, before, after):
  """freeze_at 2: the stem and res2 stay as they were; res3 and the heads move."""
  stem = 'conv1_1' if c.model.backbone.variant == 'd' else 'conv1'
  same = lambda a, b: bool(jax.tree.all(jax.tree.map(np.array_equal, a, b)))
  assert same(before['backbone'][stem], after['backbone'][stem])
  assert same(before['backbone']['res2'], after['backbone']['res2'])
  assert not same(before['backbone']['res3'], after['backbone']['res3'])
  head = 'head' if c.model.name == 'retinanet' else 'rpn'
  assert not same(before[head], after[head])
