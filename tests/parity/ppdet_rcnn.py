"""ppdet side of tests/parity/test_rcnn_heads.py (runs in the ppdet venv).

Builds PaddleDetection 2.6's R-CNN and RetinaNet heads directly with the arguments of
its faster_rcnn_r50(_fpn)_1x / cascade_rcnn_r50_fpn_1x / mask_rcnn_r50_fpn_1x /
retinanet_r50_fpn_1x configs, randomizes their weights (spec['seed'] + case index), runs
them in eval mode on the feature maps and RoIs of inputs.npz (NHWC, written by the detx
side) and saves, per case, the state dict with the full-model prefix (<case>.pdparams,
paddle.save as ppdet writes model_final.pdparams) and the raw outputs
(NCHW as ppdet returns them) before any proposal generation or NMS.
"""
import numpy as np
import paddle

from ppdet_common import patch_concat, randomize, read_spec, save

FPN_SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
FPN_ROI = dict(resolution=7, sampling_ratio=0, aligned=True, spatial_scale=FPN_SCALES)


def nchw(x):
  return paddle.to_tensor(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def state(prefix, module, seed):
  return {prefix + k: v for k, v in randomize(module, seed).items()}


def rpn(inp, seed, fpn):
  from ppdet.modeling.proposal_generator.rpn_head import RPNHead
  if fpn:
    anchors = dict(aspect_ratios=[0.5, 1.0, 2.0], anchor_sizes=[[32], [64], [128], [256], [512]],
                   strides=[4, 8, 16, 32, 64])
    head, feats = RPNHead(anchor_generator=anchors, in_channel=256), [inp[f'p{l}'] for l in
                                                                        range(2, 7)]
  else:
    anchors = dict(aspect_ratios=[0.5, 1.0, 2.0], anchor_sizes=[32, 64, 128, 256, 512],
                   strides=[16])
    head, feats = RPNHead(anchor_generator=anchors, in_channel=1024), [inp['c4']]
  sd = state('rpn_head.', head, seed)
  head.eval()
  out = {}
  for i, f in enumerate(head.rpn_feat([nchw(f) for f in feats])):
    out[f'score{i}'] = head.rpn_rois_score(f).numpy()
    out[f'delta{i}'] = head.rpn_rois_delta(f).numpy()
  return sd, out


def box_head(inp, seed, kind):
  from ppdet.modeling.backbones.resnet import Res5Head
  from ppdet.modeling.bbox_utils import delta2bbox
  from ppdet.modeling.heads.bbox_head import BBoxHead, TwoFCHead
  rois, rois_num = paddle.to_tensor(inp['rois']), paddle.to_tensor(inp['rois_num'])
  if kind == 'fpn':
    head = BBoxHead(TwoFCHead(in_channel=256, out_channel=1024, resolution=7), 1024,
                    roi_extractor=FPN_ROI, num_classes=80)
    feats = [nchw(inp[f'p{l}']) for l in range(2, 6)]
  else:  # faster_rcnn_r50_1x: Res5Head, RoIAlign 14 on C4, average pool
    head = BBoxHead(Res5Head(depth=50), 2048, with_pool=True, num_classes=80,
                    roi_extractor=dict(resolution=14, sampling_ratio=0, aligned=True,
                                       spatial_scale=[1 / 16]))
    feats = [nchw(inp['c4'])]
  sd = state('bbox_head.', head, seed)
  head.eval()
  (deltas, probs), _ = head(feats, [rois], rois_num)
  pooled = head.roi_extractor(feats, [rois], rois_num)
  boxes = delta2bbox(deltas, rois, head.bbox_weight)  # RCNNBox's decoding, before its clip
  return sd, {'deltas': deltas.numpy(), 'probs': probs.numpy(), 'pooled': pooled.numpy(),
              'boxes': boxes.numpy()}


def cascade(inp, seed):
  from ppdet.modeling.heads.cascade_head import CascadeHead, CascadeTwoFCHead
  head = CascadeHead(CascadeTwoFCHead(in_channel=256, out_channel=1024, resolution=7,
                                      num_cascade_stage=3), 1024, roi_extractor=FPN_ROI,
                     num_classes=80, num_cascade_stages=3, reg_class_agnostic=True)
  sd = state('bbox_head.', head, seed)
  head.eval()
  feats = [nchw(inp[f'p{l}']) for l in range(2, 6)]
  rois, rois_num = paddle.to_tensor(inp['rois']), paddle.to_tensor(inp['rois_num'])
  pooled = head.roi_extractor(feats, [rois], rois_num)
  out = {}
  for i in range(3):  # every stage on the same RoIs (the refinement between is box decoding)
    x = head.head(pooled, i)
    out[f'score{i}'] = head.bbox_score_list[i](x).numpy()
    out[f'delta{i}'] = head.bbox_delta_list[i](x).numpy()
  # the whole cascade: refinement between the stages, scores averaged over the stages
  (deltas, probs), _ = head(feats, [rois], rois_num, {'im_shape': paddle.to_tensor(
      [inp['image_hw']], dtype='float32')})
  out.update(final_deltas=deltas.numpy(), final_probs=probs.numpy(),
             refined_rois=head.get_refined_rois()[0].numpy())
  return sd, out


def mask(inp, seed):
  from ppdet.modeling.heads.mask_head import MaskFeat, MaskHead
  head = MaskHead(MaskFeat(in_channel=256, out_channel=256, num_convs=4), num_classes=80,
                  roi_extractor=dict(FPN_ROI, resolution=14))
  sd = state('mask_head.', head, seed)
  head.eval()
  feats = [nchw(inp[f'p{l}']) for l in range(2, 6)]
  rois, rois_num = paddle.to_tensor(inp['rois']), paddle.to_tensor(inp['rois_num'])
  logits = head.mask_fcn_logits(head.head(head.roi_extractor(feats, [rois], rois_num)))
  return sd, {'logits': logits.numpy()}


def retina(inp, seed):
  from ppdet.modeling.heads.retina_head import RetinaFeat, RetinaHead
  from ppdet.modeling.proposal_generator.anchor_generator import RetinaAnchorGenerator
  head = RetinaHead(num_classes=80, conv_feat=RetinaFeat(feat_in=256, feat_out=256, num_convs=4,
                                                         norm_type=None, use_dcn=False),
                    anchor_generator=RetinaAnchorGenerator(
                        octave_base_scale=4, scales_per_octave=3, aspect_ratios=[0.5, 1.0, 2.0],
                        strides=[8.0, 16.0, 32.0, 64.0, 128.0]),
                    bbox_assigner=None, loss_class=None, loss_bbox=None, nms=None,
                    prior_prob=0.01, nms_pre=1000)
  sd = state('head.', head, seed)
  head.eval()
  feats = [nchw(inp[f'p{l}']) for l in range(3, 8)]
  cls, reg = head(feats)
  out = {f'cls{i}': c.numpy() for i, c in enumerate(cls)}
  out.update({f'reg{i}': r.numpy() for i, r in enumerate(reg)})
  out.update({f'anchors{i}': a.numpy() for i, a in enumerate(head.anchor_generator(feats))})
  return sd, out


CASES = {'rpn_fpn': lambda i, s: rpn(i, s, True), 'rpn_c4': lambda i, s: rpn(i, s, False),
         'box_fpn': lambda i, s: box_head(i, s, 'fpn'), 'box_c4': lambda i, s: box_head(i, s, 'c4'),
         'cascade': cascade, 'mask': mask, 'retina': retina}


def main():
  patch_concat()
  paddle.set_device('cpu')
  spec, outdir = read_spec()
  inp = dict(np.load(outdir / 'inputs.npz'))
  with paddle.no_grad():
    for k, case in enumerate(spec['cases']):
      sd, out = CASES[case](inp, spec['seed'] + k)
      # the file a PaddleDetection 2.x user has: paddle.save of the state dict
      paddle.save({k: paddle.to_tensor(v) for k, v in sd.items()},
                  str(outdir / f'{case}.pdparams'))
      save(outdir, f'{case}_out', **out)


if __name__ == '__main__':
  main()
