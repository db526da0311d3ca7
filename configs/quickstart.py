r"""A small YOLOv3 on the generated shapes dataset: the README's first command.

  python -m detx.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Generates ~/.cache/detx/shapes_v1 on first use (no download), trains a
narrow DarkNet-YOLOv3 at 128x128 on the CPU and evaluates COCO box AP on the
generated val split. Measured: bbox/AP50 0.586 in 8.8 min on a 2-core CPU (seed 0;
experiments/results/quickstart_cpu.json).
"""
from detx import config as base


def get_config():
  c = base.load('_base/yolov3')
  c.model.num_classes = 4
  c.model.pretrained = ''  # random init: a quick start without downloads
  c.model.backbone.update(depths=(1, 1, 2, 2, 1), width=0.25)
  # COCO's anchors scaled from 608 to the 128-pixel input.
  c.model.anchors = tuple((round(w * 128 / 608, 1), round(h * 128 / 608, 1))
                          for w, h in c.model.anchors)
  c.model.label_smooth = False

  c.data.name = 'synthetic'
  c.data.dir = '~/.cache/detx/shapes_v1'
  c.data.train_sizes = (96, 128, 160)
  # One size per batch, as its recorded figures were measured (size_group=8, the zoo's:
  # experiments/results/quickstart_size_group_cpu.json).
  c.data.size_group = 0
  c.data.mixup_epochs = 0
  c.data.augment = 'light'  # colour + flip: the zoo's crop/expand need longer schedules
  c.data.num_workers = 0
  c.eval.size = 128
  c.eval.batch_size = 16

  c.train.batch_size = 16
  c.train.steps = 1500
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.eval.every = 0
  c.optim.base_lr = 0.01
  c.optim.schedule.ref_steps = 1500
  c.optim.schedule.ref_milestones = (1200, 1400)
  c.optim.schedule.ref_warmup = 100
  return c
