"""PaddleDetection 2.x -> 1.x names of the R-CNN and RetinaNet heads (see detx.weights.ppdet2).

Parts: 'rpn' (FPN RPN, `_fpn2` names), 'rpn_c4' (the single-level RPN), 'bbox_head'
(FPN TwoFCHead or C4 Res5Head, with BBoxHead's outputs), 'cascade_head' (three
CascadeTwoFCHead stages), 'mask_head' (MaskFeat + mask_fcn_logits) and 'retina_head'.

Where 2.x lays an array out differently from the zoo by design, the rename transforms it
(docs/parity.md, part A2):
- class scores: 2.x puts background last ([.., 81]), detx first: the last column moves
  to the front;
- class-specific box deltas: 2.x has 4 x 80 (no background slot), detx 4 x 81 with the
  background's 4 first: zeros are put in front; Cascade's class-agnostic 4 become
  detx's 2 x 4 (background, foreground) the same way; mask logits 80 -> 81 likewise;
- anchor order: 2.x enumerates anchors size-first (ratios 0.5, 1, 2), detx's
  anchor_generator ratio-first (RetinaNet ratios 1, 2, 0.5), so the output channels of
  the C4 RPN (15 anchors) and of the RetinaNet head (9 anchors x C or x 4) are permuted
  to detx's anchor order; the FPN RPN has one size per level, so its order agrees.
"""
import numpy as np

from detx.weights.ppdet2 import Rename

_WB = {'weight': 'w', 'bias': 'b'}


def _wb(pattern: str, prefix: str, transform=None):
  """`pattern.weight|bias` -> `<prefix>_w|_b`."""
  return [Rename(pattern + rf'\.{k}', f'{prefix}_{v}', transform) for k, v in _WB.items()]


def background_first(a):
  """2.x scores [..., C + 1] (background last) -> detx's (background first)."""
  return np.concatenate([a[..., -1:], a[..., :-1]], axis=-1)


def background_slot(width: int, axis: int = -1):
  """Deltas (or logits) without a background entry -> `width` zeros in front on `axis`."""
  def pad(a):
    shape = list(a.shape)
    shape[axis] = width
    return np.concatenate([np.zeros(shape, a.dtype), a], axis=axis)
  return pad


def anchor_permutation(num_ratios: int, num_sizes: int, ratio_order=None):
  """perm with detx anchor a = perm -> 2.x anchor perm[a]: detx ratio-first
  (r * num_sizes + s, ratios in `ratio_order`: indices into 2.x's ratio list), 2.x
  size-first (s * num_ratios + r)."""
  ratio_order = range(num_ratios) if ratio_order is None else ratio_order
  return np.array([s * num_ratios + r for r in ratio_order for s in range(num_sizes)])


def permute_anchors(perm):
  """Output channels a * P + j (axis 0 of an OIHW conv weight or of a bias; P = channels
  per anchor: 1, 4 or the class count) reordered so that detx's anchor a takes 2.x's
  anchor perm[a]."""
  def permute(a):
    per_anchor = a.shape[0] // len(perm)
    return a[(perm[:, None] * per_anchor + np.arange(per_anchor)[None, :]).reshape(-1)]
  return permute


_C4_ANCHORS = anchor_permutation(3, 5)               # ratios (0.5, 1, 2) both, 5 sizes
_RETINA_ANCHORS = anchor_permutation(3, 3, (1, 2, 0))  # detx ratios (1, 2, 0.5)


def _rpn(suffix: str, perm=None):
  permute = permute_anchors(perm) if perm is not None else None
  return (_wb(r'rpn_head\.rpn_feat\.rpn_conv', f'conv_rpn{suffix}')
          + _wb(r'rpn_head\.rpn_rois_score', f'rpn_cls_logits{suffix}', permute)
          + _wb(r'rpn_head\.rpn_rois_delta', f'rpn_bbox_pred{suffix}', permute))


def _box_outputs(score: str, delta: str, suffix: str, delta_slot: int):
  return (_wb(score, f'cls_score{suffix}', background_first)
          + _wb(delta, f'bbox_pred{suffix}', background_slot(delta_slot)))


_RES5_BN = {'weight': 'scale', 'bias': 'offset', '_mean': 'mean', '_variance': 'variance'}
_BRANCH = {'branch2a': 'branch2a', 'branch2b': 'branch2b', 'branch2c': 'branch2c',
           'short': 'branch1'}
# C4 Res5Head: res5<b>.<branch>.conv|norm.* -> res5<b>_<branch>_weights, bn5<b>_<branch>_*
_RES5 = [r for b2, b1 in _BRANCH.items() for r in (
    [Rename(rf'bbox_head\.head\.res5\.res5(?P<b>[a-z])\.{b2}\.conv\.weight',
            'res5{b}_' + f'{b1}_weights')]
    + [Rename(rf'bbox_head\.head\.res5\.res5(?P<b>[a-z])\.{b2}\.norm\.{k}',
              'bn5{b}_' + f'{b1}_{v}') for k, v in _RES5_BN.items()])]

_FC = r'bbox_head\.head{stage}\.(?P<fc>fc[67])'
_STAGE_SUFFIX = ('', '_2', '_3')

RENAMES = {
    'rpn': _rpn('_fpn2'),
    'rpn_c4': _rpn('', _C4_ANCHORS),
    'bbox_head': ([Rename(_FC.format(stage='') + rf'\.{k}', '{fc}_' + v) for k, v in _WB.items()]
                  + _RES5
                  + _box_outputs(r'bbox_head\.bbox_score', r'bbox_head\.bbox_delta', '', 4)),
    'cascade_head': [r for i, s in enumerate(_STAGE_SUFFIX) for r in (
        [Rename(_FC.format(stage=rf'\.{i}') + rf'\.{k}', '{fc}' + f'{s}_{v}')
         for k, v in _WB.items()]
        + _box_outputs(rf'bbox_head\.bbox_score_stage{i}', rf'bbox_head\.bbox_delta_stage{i}',
                       s, 4))],
    'mask_head': (
        [Rename(r'mask_head\.head\.upsample\.(?P<p>mask_inter_feat_\d+|conv5_mask)' + rf'\.{k}',
                '{p}_' + v) for k, v in _WB.items()]
        + _wb(r'mask_head\.mask_fcn_logits', 'mask_fcn_logits', background_slot(1, 0))),
    'retina_head': (
        [Rename(rf'head\.conv_feat\.fcos_head_{kind}_tower_conv_(?P<i>\d)\.conv\.{k}',
                f'retnet_{name}_conv_n' + '{i}' + f'_fpn3_{v}')
         for kind, name in (('cls', 'cls'), ('reg', 'bbox')) for k, v in _WB.items()]
        + _wb(r'head\.retina_cls', 'retnet_cls_pred_fpn3',
              permute_anchors(_RETINA_ANCHORS))
        + _wb(r'head\.retina_reg', 'retnet_bbox_pred_fpn3', permute_anchors(_RETINA_ANCHORS))),
}
