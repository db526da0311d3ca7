"""experiments/benchmark.py --compare=torchvision: the torchvision counterpart of a detx
config (random weights, frozen BN and trainable stages as the detx config), run on the
images of the same batch. PEERS maps (family, backbone) to the builder; a peer that is a
different model (SSDlite320 MobileNet-V3 next to SSD300 MobileNet-V1) says so in its label,
and the benchmark then reports no speedup.
"""
import jax
import numpy as np

from experiments.bench_loader import is_rcnn
from detx.data import pipelines as input_pipelines

# Builders that are not the detx model, with what differs (shown in the row's peer column).
DIFFERENT_MODEL = {
    'ssdlite320_mobilenet_v3_large': 'different model: SSDlite 320x320, MobileNet-V3-Large',
}


def torchvision_status():
  """(torch, torchvision) modules, or (None, reason)."""
  try:
    import torch
    import torchvision  # noqa: F401
    from torchvision.models import detection  # noqa: F401
  except Exception as e:  # ImportError, or a broken install
    return None, f'torchvision not installed ({type(e).__name__}: {e}); comparison skipped'
  return (torch, torchvision), ''


def torchvision_peer(config) -> str | None:
  """The torchvision detection builder matching a detx config, or None."""
  m = config.model
  backbone = m.get('backbone', None) or {}
  depth = backbone.get('depth', None) if hasattr(backbone, 'get') else None
  variant = backbone.get('variant', 'b') if hasattr(backbone, 'get') else 'b'
  fpn = (m.get('neck', None) or {}).get('name', '') == 'fpn'
  if m.name in ('faster_rcnn', 'mask_rcnn', 'retinanet') and depth == 50 and variant == 'b':
    if m.name == 'retinanet':
      return 'retinanet_resnet50_fpn'
    if fpn:
      return {'faster_rcnn': 'fasterrcnn_resnet50_fpn', 'mask_rcnn': 'maskrcnn_resnet50_fpn'}[m.name]
    return None  # torchvision has no ResNet-C4 R-CNN
  if m.name == 'ssd' and str(backbone.get('name', '')).startswith('vgg16'):
    return 'ssd300_vgg16'
  if m.name == 'ssd' and backbone.get('name', '') == 'mobilenet':
    return 'ssdlite320_mobilenet_v3_large'  # torchvision has no SSD300 MobileNet-V1
  return None


def peer_label(builder: str) -> str:
  """The row's peer column: 'torchvision NAME', with what differs for a different model."""
  note = DIFFERENT_MODEL.get(builder)
  return f'torchvision {builder}' + (f' ({note})' if note else '')


class TorchvisionPeer:
  """A torchvision detector run on the images of a detx batch: `infer()` and
  `train_step()` each run one blocking step of the whole batch."""

  def __init__(self, builder: str, config, batch: dict, threads: int, lr: float):
    import torch
    from torch import nn
    from torchvision.models import detection
    from torchvision.ops import misc
    self.torch = torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    platform = jax.devices()[0].platform
    self.device = torch.device('cuda' if platform == 'gpu' and torch.cuda.is_available() else 'cpu')
    kwargs = dict(weights=None, weights_backbone=None, num_classes=config.model.num_classes + 1)
    if is_rcnn(config):
      pipeline = input_pipelines.for_config(config)
      kwargs.update(min_size=pipeline.short_side, max_size=pipeline.long_side)
    model = getattr(detection, builder)(**kwargs)
    backbone = config.model.get('backbone', None) or {}
    if backbone.get('freeze_norm', False):
      _freeze_batchnorm(model, nn, misc)
    _freeze_stages(model, int(backbone.get('freeze_at', 0) or 0))
    self.model = model.to(self.device)
    self.images, self.targets = self._inputs(config, batch)
    params = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)

  def _inputs(self, config, batch):
    torch = self.torch
    images, targets = [], []
    for i in range(len(batch['image'])):
      if 'image_hw' in batch:
        h, w = (int(v) for v in batch['image_hw'][i])
        boxes = batch['boxes'][i]
      else:
        h, w = batch['image'].shape[1:3]
        boxes = batch['boxes'][i] * np.array([w, h, w, h], np.float32)
      keep = np.asarray(batch['box_mask'][i], bool)
      image = torch.from_numpy(np.ascontiguousarray(batch['image'][i, :h, :w].transpose(2, 0, 1)))
      boxes = boxes[keep].astype(np.float32)
      target = {'boxes': torch.from_numpy(boxes),
                'labels': torch.from_numpy(batch['classes'][i][keep].astype(np.int64) + 1)}
      if 'gt_polys' in batch:  # torchvision wants whole-image masks: the boxes, filled
        masks = np.zeros((len(boxes), h, w), np.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
          masks[j, y0:y1 + 1, x0:x1 + 1] = 1
        target['masks'] = torch.from_numpy(masks)
      images.append(image.to(self.device))
      targets.append({k: v.to(self.device) for k, v in target.items()})
    return images, targets

  def _sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def infer(self):
    self.model.eval()
    with self.torch.inference_mode():
      self.model(self.images)
    self._sync()

  def train_step(self):
    self.model.train()
    losses = self.model(self.images, self.targets)
    loss = sum(losses.values())
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self._sync()


def _freeze_batchnorm(model, nn, misc):
  """BatchNorm2d -> FrozenBatchNorm2d (detx's norm='affine', freeze_norm)."""
  for name, child in list(model.named_children()):
    if isinstance(child, nn.BatchNorm2d):
      frozen = misc.FrozenBatchNorm2d(child.num_features, eps=child.eps)
      setattr(model, name, frozen)
    else:
      _freeze_batchnorm(child, nn, misc)


def _freeze_stages(model, freeze_at: int):
  """No gradients for the stem and ResNet stages below `freeze_at` (Paddle's
  freeze_at=2: stem + res2; torchvision's trainable_backbone_layers=3)."""
  body = getattr(getattr(model, 'backbone', None), 'body', None)
  if body is None or freeze_at <= 0:
    return
  trainable = tuple(f'layer{i}' for i in range(freeze_at, 5))
  for name, p in body.named_parameters():
    if not name.startswith(trainable):
      p.requires_grad_(False)
