"""The model zoo of PaddleDetection's first release (597145c, 2019-07-29) as data: per
row its published AP (docs/MODEL_ZOO.md, restated in shared/reference/ZOO.md), its
schedule and its released checkpoints. Transcribed by hand; nothing here is fetched.

V1 + '<row>.tar': the Paddle 1.x checkpoint every row had (MODEL_ZOO.md's links).
V2 + '<name>.pdparams': the PaddleDetection 2.x checkpoint of the same architecture and
schedule, where 2.x published one (its configs/*/README.md; '' where it did not: 2.x
has no r50 C4 2x, r101-FPN 1x, SENet154, RetinaNet 1x or YOLOv3-R34 VOC model).
The ImageNet backbone weights each row starts from are its config's model.pretrained.
Metrics: box AP / mask AP on COCO val2017 (YOLOv3 at 608, 416 and 320), mAP@0.5 on VOC.
"""
from typing import NamedTuple

V1 = 'https://paddlemodels.bj.bcebos.com/object_detection/'
V2 = 'https://paddledet.bj.bcebos.com/models/'


class Row(NamedTuple):
  name: str
  dataset: str        # coco | voc
  schedule: str       # 1x, 2x, s1x (1.44x), 270e, 120e
  published: dict     # {'bbox/AP': 37.2, ...}; YOLOv3 adds bbox/AP@416 and bbox/AP@320
  v2: str = ''        # the 2.x checkpoint's name ('' = none published)

  @property
  def v1_url(self) -> str:
    return f'{V1}{self.name}.tar'

  @property
  def v2_url(self) -> str:
    return f'{V2}{self.v2}.pdparams' if self.v2 else ''


# name, dataset, schedule, published (COCO: box AP[/mask AP]; YOLOv3: @608,@416,@320;
# VOC: mAP@0.5), 2.x checkpoint name ('-': none published)
_TABLE = """
faster_rcnn_r50_1x                coco  1x    35.2            faster_rcnn_r50_1x_coco
faster_rcnn_r50_2x                coco  2x    37.1            -
mask_rcnn_r50_1x                  coco  1x    36.5/32.2       mask_rcnn_r50_1x_coco
mask_rcnn_r50_2x                  coco  2x    38.2/33.4       mask_rcnn_r50_2x_coco
faster_rcnn_r50_vd_1x             coco  1x    36.4            faster_rcnn_r50_vd_1x_coco
faster_rcnn_r50_fpn_1x            coco  1x    37.2            faster_rcnn_r50_fpn_1x_coco
faster_rcnn_r50_fpn_2x            coco  2x    37.7            faster_rcnn_r50_fpn_2x_coco
mask_rcnn_r50_fpn_1x              coco  1x    37.9/34.2       mask_rcnn_r50_fpn_1x_coco
mask_rcnn_r50_fpn_2x              coco  2x    38.7/34.7       mask_rcnn_r50_fpn_2x_coco
cascade_rcnn_r50_fpn_1x           coco  1x    40.9            cascade_rcnn_r50_fpn_1x_coco
faster_rcnn_r50_vd_fpn_2x         coco  2x    38.9            faster_rcnn_r50_vd_fpn_2x_coco
mask_rcnn_r50_vd_fpn_2x           coco  2x    39.8/35.4       mask_rcnn_r50_vd_fpn_2x_coco
faster_rcnn_r101_1x               coco  1x    38.3            faster_rcnn_r101_1x_coco
faster_rcnn_r101_fpn_1x           coco  1x    38.7            -
faster_rcnn_r101_fpn_2x           coco  2x    39.1            faster_rcnn_r101_fpn_2x_coco
mask_rcnn_r101_fpn_1x             coco  1x    39.5/35.2       mask_rcnn_r101_fpn_1x_coco
faster_rcnn_r101_vd_fpn_1x        coco  1x    40.5            faster_rcnn_r101_vd_fpn_1x_coco
faster_rcnn_r101_vd_fpn_2x        coco  2x    40.8            faster_rcnn_r101_vd_fpn_2x_coco
mask_rcnn_r101_vd_fpn_1x          coco  1x    41.4/36.8       mask_rcnn_r101_vd_fpn_1x_coco
faster_rcnn_x101_vd_64x4d_fpn_1x  coco  1x    42.2            faster_rcnn_x101_vd_64x4d_fpn_1x_coco
faster_rcnn_x101_vd_64x4d_fpn_2x  coco  2x    41.7            faster_rcnn_x101_vd_64x4d_fpn_2x_coco
mask_rcnn_x101_vd_64x4d_fpn_1x    coco  1x    42.9/37.9       mask_rcnn_x101_vd_64x4d_fpn_1x_coco
mask_rcnn_x101_vd_64x4d_fpn_2x    coco  2x    42.6/37.6       mask_rcnn_x101_vd_64x4d_fpn_2x_coco
faster_rcnn_se154_vd_fpn_s1x      coco  s1x   42.9            -
mask_rcnn_se154_vd_fpn_s1x        coco  s1x   44.0/38.7       -
yolov3_darknet                    coco  270e  38.9,37.5,34.8  yolov3_darknet53_270e_coco
yolov3_mobilenet_v1               coco  270e  29.3,29.3,27.1  yolov3_mobilenet_v1_270e_coco
yolov3_r34                        coco  270e  36.2,34.3,31.4  yolov3_r34_270e_coco
yolov3_darknet_voc                voc   270e  83.5,83.6,82.2  yolov3_darknet53_270e_voc
yolov3_mobilenet_v1_voc           voc   270e  76.2,76.7,75.3  yolov3_mobilenet_v1_270e_voc
yolov3_r34_voc                    voc   270e  82.6,81.9,80.1  -
retinanet_r50_fpn_1x              coco  1x    36.0            -
retinanet_r101_fpn_1x             coco  1x    37.3            -
ssd_mobilenet_v1_voc              voc   120e  73.13           ssd_mobilenet_v1_300_120e_voc
"""


def _published(dataset: str, text: str) -> dict:
  key = 'voc/mAP' if dataset == 'voc' else 'bbox/AP'
  values = [float(v) for v in text.replace('/', ',').split(',')]
  if '/' in text:  # box AP / mask AP
    return {key: values[0], 'segm/AP': values[1]}
  return dict(zip((key, f'{key}@416', f'{key}@320'), values))


def _rows(table: str) -> tuple:
  rows = []
  for line in table.strip().splitlines():
    name, dataset, schedule, published, v2 = line.split()
    rows.append(Row(name, dataset, schedule, _published(dataset, published),
                    '' if v2 == '-' else v2))
  return tuple(rows)


ROWS = _rows(_TABLE)
