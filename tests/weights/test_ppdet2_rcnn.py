"""PaddleDetection 2.x R-CNN / RetinaNet head names and layouts -> the zoo's 1.x
(detx.weights.ppdet2_rcnn), without paddle: the names each config's parts give, and the
transforms checked against what each channel means. The slow parity tier
(tests/parity/test_rcnn_heads.py) runs the same renames against ppdet's modules."""
import numpy as np
import pytest

from detx import config as cfg
from detx.weights import ppdet2


def _to_1x(config_name, state):
  c = cfg.load(config_name)
  out, unmatched = ppdet2.to_1x(state, c)
  assert not unmatched, unmatched
  return out


def test_box_head_scores_background_first_and_deltas_get_a_background_slot():
  # 2.x bbox_score column j: class j (0..79), column 80 background; bbox_delta 4 per class
  score = np.tile(np.arange(81, dtype=np.float32), (3, 1))
  delta = np.tile(np.arange(320, dtype=np.float32) + 1, (3, 1))
  out = _to_1x('faster_rcnn_r50_fpn_1x', {
      'bbox_head.bbox_score.weight': score, 'bbox_head.bbox_score.bias': score[0],
      'bbox_head.bbox_delta.weight': delta, 'bbox_head.bbox_delta.bias': delta[0],
      'bbox_head.head.fc6.weight': np.zeros((4, 2)), 'rpn_head.rpn_feat.rpn_conv.bias': [0.0]})
  assert sorted(out) == ['bbox_pred_b', 'bbox_pred_w', 'cls_score_b', 'cls_score_w',
                         'conv_rpn_fpn2_b', 'fc6_w']
  np.testing.assert_array_equal(out['cls_score_w'][0], [80] + list(range(80)))
  np.testing.assert_array_equal(out['cls_score_b'], [80] + list(range(80)))
  assert out['bbox_pred_w'].shape == (3, 324)
  np.testing.assert_array_equal(out['bbox_pred_b'], [0] * 4 + list(range(1, 321)))


def test_c4_rpn_and_res5_names_and_anchor_order():
  # the C4 RPN has 15 anchors: 2.x channel s * 3 + r (size s, ratio r of 0.5, 1, 2);
  # detx's anchor_generator (as 1.x) puts anchor r * 5 + s in channel r * 5 + s
  labels_2x = [(s, r) for s in range(5) for r in range(3)]
  score = np.arange(15, dtype=np.float32).reshape(15, 1, 1, 1)
  delta = np.arange(60, dtype=np.float32)
  out = _to_1x('faster_rcnn_r50_1x', {
      'rpn_head.rpn_rois_score.weight': score, 'rpn_head.rpn_rois_delta.bias': delta,
      'bbox_head.head.res5.res5a.short.norm._variance': np.ones(2),
      'bbox_head.head.res5.res5c.branch2b.conv.weight': np.ones(2)})
  assert sorted(out) == ['bn5a_branch1_variance', 'res5c_branch2b_weights',
                         'rpn_bbox_pred_b', 'rpn_cls_logits_w']
  got = [labels_2x[int(i)] for i in out['rpn_cls_logits_w'].reshape(-1)]
  assert got == [(s, r) for r in range(3) for s in range(5)]
  np.testing.assert_array_equal(out['rpn_bbox_pred_b'].reshape(15, 4) % 4, [[0, 1, 2, 3]] * 15)
  assert [labels_2x[int(i) // 4] for i in out['rpn_bbox_pred_b'][::4]] == got


def test_retina_anchor_order_cascade_and_mask():
  ratios_2x = (0.5, 1.0, 2.0)
  labels_2x = [(s, ratios_2x[r]) for s in range(3) for r in range(3)]
  cls = np.arange(9 * 80, dtype=np.float32)
  out = _to_1x('retinanet_r50_fpn_1x', {
      'head.retina_cls.bias': cls,
      'head.conv_feat.fcos_head_reg_tower_conv_3.conv.weight': np.ones(1)})
  assert sorted(out) == ['retnet_bbox_conv_n3_fpn3_w', 'retnet_cls_pred_fpn3_b']
  anchors = [labels_2x[int(i) // 80] for i in out['retnet_cls_pred_fpn3_b'][::80]]
  assert anchors == [(s, r) for r in (1.0, 2.0, 0.5) for s in range(3)]  # detx's order
  np.testing.assert_array_equal(out['retnet_cls_pred_fpn3_b'].reshape(9, 80) % 80,
                                np.tile(np.arange(80), (9, 1)))

  out = _to_1x('cascade_rcnn_r50_fpn_1x', {
      'bbox_head.bbox_delta_stage2.bias': np.ones(4),
      'bbox_head.head.1.fc7.weight': np.ones(1)})
  np.testing.assert_array_equal(out['bbox_pred_3_b'], [0, 0, 0, 0, 1, 1, 1, 1])
  assert sorted(out) == ['bbox_pred_3_b', 'fc7_2_w']

  out = _to_1x('mask_rcnn_r50_fpn_1x', {
      'mask_head.mask_fcn_logits.weight': np.ones((80, 2, 1, 1)),
      'mask_head.head.upsample.conv5_mask.weight': np.ones(1)})
  assert out['mask_fcn_logits_w'].shape == (81, 2, 1, 1)
  assert not out['mask_fcn_logits_w'][0].any() and out['mask_fcn_logits_w'][1:].all()
  assert 'conv5_mask_w' in out


@pytest.mark.parametrize('name', ['faster_rcnn_r50_fpn_1x', 'faster_rcnn_r50_1x'])
def test_rpn_part_follows_the_neck(name):
  parts = ppdet2.parts_for(cfg.load(name))
  assert ('rpn' in parts) == ('fpn' in parts) and ('rpn_c4' in parts) != ('fpn' in parts)
