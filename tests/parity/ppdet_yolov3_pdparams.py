"""ppdet side of tests/parity/test_yolov3_pdparams.py (runs in the ppdet venv).

spec: images (paths), size (eval size), seed. Writes into outdir:
  yolov3.pdparams   paddle.save of a YOLOv3-DarkNet53 state dict (PaddleDetection 2.6's
                    YOLOv3 architecture: DarkNet(53) + YOLOv3FPN + YOLOv3Head, 80 classes)
  dets.npz          per image i: 'bbox{i}' [K, 6] (class, score, x1, y1, x2, y2), ppdet's
                    own output: its Decode / Resize(interp 2, keep_ratio False) /
                    NormalizeImage / Permute, the model, YOLOBox and MultiClassNMS.

Weights: random (ppdet_common.randomize, std 0.02), then the three 1x1 output convs are
arranged so the detections are stable under float32 rounding (see `arrange`).
Post-process as the zoo's yml: yolo_box conf_thresh 0.01, clip_bbox, scale_x_y 1;
multiclass_nms score 0.01, nms_top_k 1000, keep_top_k 100, IoU 0.45, normalized False.
"""
import numpy as np
import paddle

from ppdet_common import read_spec, randomize, save

ANCHORS_PER_LEVEL, NUM_CLASSES = 3, 80
THRESH_LOGIT = float(np.log(0.01 / 0.99))     # yolo_box conf_thresh and the NMS score
CLASS_LOGIT = 8.0


def build():
  from ppdet.modeling.architectures.yolo import YOLOv3
  from ppdet.modeling.backbones.darknet import DarkNet
  from ppdet.modeling.heads.yolo_head import YOLOv3Head
  from ppdet.modeling.layers import MultiClassNMS, YOLOBox
  from ppdet.modeling.necks.yolo_fpn import YOLOv3FPN
  from ppdet.modeling.post_process import BBoxPostProcess
  post = BBoxPostProcess(
      num_classes=NUM_CLASSES,
      decode=YOLOBox(num_classes=NUM_CLASSES, conf_thresh=0.01, downsample_ratio=32,
                     clip_bbox=True, scale_x_y=1.0),
      nms=MultiClassNMS(score_threshold=0.01, nms_top_k=1000, keep_top_k=100,
                        nms_threshold=0.45, normalized=False))
  return YOLOv3(backbone=DarkNet(depth=53, return_idx=[2, 3, 4]),
                neck=YOLOv3FPN(in_channels=[256, 512, 1024]),
                yolo_head=YOLOv3Head(in_channels=[1024, 512, 256], num_classes=NUM_CLASSES),
                post_process=post)


def preprocess(path, size):
  from ppdet.data.transform.operators import Decode, NormalizeImage, Permute, Resize
  sample = {'im_file': str(path)}
  for op in (Decode(), Resize(target_size=[size, size], keep_ratio=False, interp=2),
             NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                            is_scale=True), Permute()):
    sample = op(sample)
  h, w = Decode()({'im_file': str(path)})['im_shape']
  scale = sample['scale_factor'].astype(np.float32)
  # YOLOBox takes int32(im_shape / scale_factor) as the original size; in float32 that
  # can fall a hair under h (or w) and truncate one pixel short. The scale factor is
  # nudged down to the float32 below it where that happens (a 2.x artefact; the zoo
  # passed the original size itself), so ppdet decodes to the true original size.
  for k, orig in enumerate((h, w)):
    while np.float32(size) / scale[k] < orig:
      scale[k] = np.nextafter(scale[k], np.float32(0))
  return {'image': paddle.to_tensor(sample['image'][None]),
          'im_shape': paddle.to_tensor(sample['im_shape'][None].astype(np.float32)),
          'scale_factor': paddle.to_tensor(scale[None])}


def head_outputs(model, inputs):
  return [o.numpy() for o in model.yolo_head(model.neck(model.backbone(inputs)))]


def arrange(model, inputs_list):
  """The output convs (yolo_output.{0,1,2}: per anchor [tx, ty, tw, th, obj, 80 classes])
  rescaled so that, over these images, the box channels have std 0.5 (boxes near anchor
  size, no exp overflow) and the objectness logits std 3; class weights zeroed, and each
  (level, anchor) slot given one class by bias (+8, the rest -8): a kept box scores
  sigmoid(obj) * 0.9997 in that class only. Then the objectness is stretched about the
  middle of the widest gap between consecutive sorted logits among the top 2-6 per
  image, that middle moved to the decision threshold (logit(0.01), both yolo_box's and
  the NMS score's) and the gap made >= 8 logits wide: every kept anchor scores far above
  every dropped one (>= 4 in logit), and the kept scores spread far apart."""
  outs = [head_outputs(model, inp) for inp in inputs_list]
  convs = model.yolo_head.yolo_outputs
  logits = []
  for lvl, conv in enumerate(convs):
    w, b = conv.weight.numpy(), conv.bias.numpy()
    raw = np.concatenate([o[lvl].reshape(ANCHORS_PER_LEVEL, 5 + NUM_CLASSES, -1)
                          for o in outs], -1)
    w = w.reshape(ANCHORS_PER_LEVEL, 5 + NUM_CLASSES, -1)
    b = np.zeros_like(b).reshape(ANCHORS_PER_LEVEL, 5 + NUM_CLASSES)
    for a in range(ANCHORS_PER_LEVEL):
      # the output is w . f + b0: centre (bias) and scale (weight) each channel.
      centred = raw[a] - conv.bias.numpy().reshape(ANCHORS_PER_LEVEL, -1)[a][:, None]
      for c, target in ((0, 0.5), (1, 0.5), (2, 0.5), (3, 0.5), (4, 3.0)):
        k = target / (centred[c].std() + 1e-12)
        w[a, c] *= k
        b[a, c] = -centred[c].mean() * k
      logits.append((centred[4] - centred[4].mean()) * 3.0 / (centred[4].std() + 1e-12))
      w[a, 5:] = 0.0
      b[a, 5:] = -CLASS_LOGIT
      b[a, 5 + (37 * (ANCHORS_PER_LEVEL * lvl + a) + 1) % NUM_CLASSES] = CLASS_LOGIT
    conv.weight.set_value(w.reshape(conv.weight.shape).astype(np.float32))
    conv.bias.set_value(b.reshape(-1).astype(np.float32))
  top = np.sort(np.concatenate(logits))[::-1]
  n = len(inputs_list)
  ks = np.arange(2 * n, 6 * n)
  gaps = top[ks - 1] - top[ks]
  k = ks[int(np.argmax(gaps))]
  cut = (top[k - 1] + top[k]) / 2
  assert gaps.max() > 0.3, f'no clear objectness gap (widest {gaps.max():.3f})'
  stretch = max(1.0, 8.0 / gaps.max())
  for conv in convs:  # obj -> stretch * (obj - cut) + THRESH_LOGIT
    w = conv.weight.numpy().reshape(ANCHORS_PER_LEVEL, 5 + NUM_CLASSES, -1)
    b = conv.bias.numpy().reshape(ANCHORS_PER_LEVEL, -1)
    w[:, 4] *= stretch
    b[:, 4] = stretch * (b[:, 4] - cut) + THRESH_LOGIT
    conv.weight.set_value(w.reshape(conv.weight.shape))
    conv.bias.set_value(b.reshape(-1).astype(np.float32))
  return float(gaps.max() * stretch), int(k)


def main():
  spec, outdir = read_spec()
  paddle.set_device('cpu')
  model = build()
  randomize(model, spec['seed'], std=0.02)
  model.eval()
  inputs = [preprocess(p, spec['size']) for p in spec['images']]
  with paddle.no_grad():
    gap, kept = arrange(model, inputs)
    paddle.save(model.state_dict(), str(outdir / 'yolov3.pdparams'))
    dets = {}
    for i, inp in enumerate(inputs):
      out = model(inp)
      dets[f'bbox{i}'] = out['bbox'].numpy()[:int(out['bbox_num'].numpy()[0])]
  save(outdir, 'dets', gap=np.float32(gap), kept=np.int32(kept), **dets)


if __name__ == '__main__':
  main()
