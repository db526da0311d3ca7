r"""COCO-scale rehearsal (issue 18, item 3): preparation, read-back and evaluation of a
generated COCO-format set far larger than coco_tiny, timed on this machine.

  python experiments/rehearsal.py --sizes=5000,10000,20000 --cache=/tmp/detx_rehearsal \
      --out=coco_scale_rehearsal_cpu.json

The set: 640x480 JPEGs (textured backgrounds with filled polygons), 1-12 objects per
image drawn from COCO's 80 category ids, each annotation with its polygon, bbox and
area. Images are generated once under CACHE/images and shared by the sizes (an N-image
set is the first N images; CACHE/coco_N holds its annotation json and a link to the
images). Per size, each in a fresh child process:

  prepare  detx.data.loader.Dataset on the set (what `python -m detx.main` runs on
           first use: the tfds builder of detx/data/coco.py -> array_record) into an
           empty cache: img/s and the process's peak RSS (VmHWM); a `parse`
           child measures reading the annotation json alone.
  read     a fresh process opens the prepared set and takes train batches through the
           R-CNN input pipeline (detx.data.pipelines, data.num_workers=0): seconds from
           start to the first batch, img/s of the next batches, peak RSS.

Evaluation (--eval_images, default 5000): detections for every image of that set, 100
per image (each ground-truth box jittered, with a random score; the rest false
positives at random places and categories), scored by detx's CocoEvaluator with each
available eval backend ('pycocotools', 'faster_coco_eval'): seconds to add the
detections and to evaluate, bbox stats, and the largest stat difference between the
backends. The table goes to experiments/results/OUT through experiments/record.py
(--eval_images=0 --keep_eval: the scale rows are measured again and the evaluation
is copied from OUT's earlier record, naming the run that measured it).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import record  # noqa: E402

ROOT = record.ROOT
# COCO 2017's 80 category ids.
CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in
                     (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
SIZE = (480, 640)  # (height, width)
SEED = 2019


def peak_rss_mb() -> float:
  """This process's peak RSS: VmHWM (ru_maxrss survives exec, so a child started by a
  larger parent would report the parent's size)."""
  try:
    for line in Path('/proc/self/status').read_text().splitlines():
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ the data set ---

def objects(i: int, size=SIZE) -> list[dict]:
  """Image i's objects (a pure function of i): category id, polygon [[x, y], ...]."""
  rng = np.random.default_rng([SEED, i])
  h, w = size
  out = []
  for _ in range(int(rng.integers(1, 13))):
    bw, bh = rng.uniform(0.03, 0.5) * w, rng.uniform(0.03, 0.5) * h
    cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
    k = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.6, 1.0, k)
    poly = np.stack([cx + bw / 2 * radius * np.cos(angles),
                     cy + bh / 2 * radius * np.sin(angles)], 1)
    out.append({'category_id': int(rng.choice(CATEGORY_IDS)),
                'polygon': np.round(np.clip(poly, 0, [w - 1, h - 1]), 1)})
  return out


def draw(i: int, size=SIZE) -> np.ndarray:
  """Image i: a smooth random texture (JPEG sizes near real photos') and its polygons."""
  import cv2
  rng = np.random.default_rng([SEED, i, 1])
  h, w = size
  noise = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
  img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
  for obj in objects(i, size):
    color = [int(c) for c in rng.integers(0, 256, 3)]
    cv2.fillPoly(img, [np.round(obj['polygon']).astype(np.int32)], color)
  return img


def ensure_images(pool: Path, n: int, size=SIZE) -> float:
  """Writes images 0..n-1 missing from `pool` (each file renamed into place when whole);
  returns the seconds spent."""
  import cv2
  pool.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  for i in range(n):
    path = pool / f'{i + 1:012d}.jpg'
    if path.exists():
      continue
    ok, data = cv2.imencode('.jpg', draw(i, size), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    tmp = path.with_suffix('.tmp')
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
    if (i + 1) % 1000 == 0:
      print(f'  generated {i + 1}/{n} images', flush=True)
  return time.perf_counter() - t0


def annotations(n: int, size=SIZE) -> dict:
  """The COCO instances json of images 1..n (image id i+1 is file i+1)."""
  h, w = size
  images, anns = [], []
  for i in range(n):
    images.append({'id': i + 1, 'file_name': f'{i + 1:012d}.jpg', 'height': h, 'width': w})
    for obj in objects(i, size):
      p = obj['polygon']
      x1, y1 = p.min(0)
      x2, y2 = p.max(0)
      x, y = p[:, 0], p[:, 1]
      area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
      anns.append({'id': len(anns) + 1, 'image_id': i + 1,
                   'category_id': obj['category_id'], 'iscrowd': 0, 'area': area,
                   'bbox': [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                   'segmentation': [[float(v) for v in p.reshape(-1)]]})
  cats = [{'id': c, 'name': f'category_{c}', 'supercategory': 'thing'}
          for c in CATEGORY_IDS]
  return {'images': images, 'annotations': anns, 'categories': cats}


def make_set(cache: Path, n: int, size=SIZE, split: str = 'train') -> Path:
  """CACHE/coco_N: the first n images of CACHE/images in COCO layout (made once)."""
  ensure_images(cache / 'images', n, size)
  root = cache / f'coco_{n}'
  ann = root / 'annotations' / f'instances_{split}2017.json'
  if not ann.exists():
    ann.parent.mkdir(parents=True, exist_ok=True)
    tmp = ann.with_suffix('.tmp')
    tmp.write_text(json.dumps(annotations(n, size)))
    tmp.replace(ann)
  link = root / f'{split}2017'
  if not link.exists():
    link.symlink_to(cache / 'images', target_is_directory=True)
  return root


# --------------------------------------------------------- prepare and read back ---

def child_prepare(data_dir: str, cache_dir: str) -> dict:
  from detx.data import loader
  rss0 = peak_rss_mb()
  t0 = time.perf_counter()
  ds = loader.Dataset(data_dir, 'train', cache_dir=cache_dir)
  sec = time.perf_counter() - t0
  return {'images': ds.num_images, 'prepare_s': sec, 'prepare_img_s': ds.num_images / sec,
          'prepare_peak_rss_mb': peak_rss_mb(), 'rss_before_prepare_mb': rss0}


def child_parse(data_dir: str) -> dict:
  """Peak RSS of reading and checking the annotation json alone (what preparing holds
  besides the images)."""
  from detx.data.annotations import layout, parse_annotations
  rss0 = peak_rss_mb()
  t0 = time.perf_counter()
  parsed = parse_annotations(layout(data_dir, 'train')[0])
  return {'parse_s': time.perf_counter() - t0, 'parse_peak_rss_mb': peak_rss_mb(),
          'rss_before_parse_mb': rss0,
          'annotations': sum(len(im['objects']) for im in parsed['images'])}


def child_read(data_dir: str, cache_dir: str, config_name: str, batches: int) -> dict:
  from detx import config as cfg
  from detx.data import loader, pipelines
  config = cfg.load(config_name)
  config.data.dir, config.data.cache_dir = data_dir, cache_dir
  config.data.num_workers = 0
  t0 = time.perf_counter()
  ds = loader.build(config, config.data.train_split)
  opened = time.perf_counter() - t0
  it = pipelines.for_config(config).train_iterator(ds)
  try:
    first = next(it)
    first_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(batches):
      next(it)
    rate = batches * len(first['image']) / (time.perf_counter() - t1)
  finally:
    it.close()
  return {'read_config': config_name, 'open_s': opened, 'first_batch_s': first_s,
          'read_img_s': rate, 'read_peak_rss_mb': peak_rss_mb()}


def run_child(*args) -> dict:
  """Runs this script's --child mode in a fresh process; its JSON answer."""
  cmd = [sys.executable, __file__, '--child', *map(str, args)]
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if r.returncode != 0:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{r.stderr[-3000:]}')
  return json.loads(r.stdout.strip().splitlines()[-1])


def scale_row(cache: Path, n: int, config_name: str, batches: int) -> dict:
  t0 = time.perf_counter()
  data_dir = make_set(cache, n)
  gen_s = time.perf_counter() - t0
  tfds_dir = cache / f'tfds_{n}'
  shutil.rmtree(tfds_dir, ignore_errors=True)  # a fresh preparation every run
  row = {'images': n, 'generate_s': gen_s}
  row.update(run_child('parse', data_dir))
  row.update(run_child('prepare', data_dir, tfds_dir))
  row.update(run_child('read', data_dir, tfds_dir, config_name, batches))
  row['prepared_mb'] = sum(f.stat().st_size for f in tfds_dir.rglob('*') if f.is_file()) / 1e6
  shutil.rmtree(tfds_dir, ignore_errors=True)
  print(f'  {n} images: prepare {row["prepare_img_s"]:.0f} img/s, peak RSS '
        f'{row["prepare_peak_rss_mb"]:.0f} MB; first batch {row["first_batch_s"]:.1f} s, '
        f'read {row["read_img_s"]:.0f} img/s', flush=True)
  return row


# ------------------------------------------------------------------- evaluation ---

def detections(ann: dict, per_image: int = 100, seed: int = SEED):
  """(image ids [N], xyxy legacy boxes [N, K, 4], scores, contiguous classes): every
  ground-truth box jittered by ~10% of its size (the right class 90% of the time),
  the rest false positives."""
  rng = np.random.default_rng([seed, 3])
  cats = {c['id']: k for k, c in enumerate(sorted(ann['categories'], key=lambda c: c['id']))}
  by_image = {}
  for a in ann['annotations']:
    by_image.setdefault(a['image_id'], []).append(a)
  ids = np.array(sorted(im['id'] for im in ann['images']), np.int64)
  sizes = {im['id']: (im['height'], im['width']) for im in ann['images']}
  boxes = np.zeros((len(ids), per_image, 4), np.float32)
  scores = rng.uniform(0.0, 0.6, (len(ids), per_image)).astype(np.float32)
  classes = rng.integers(0, len(cats), (len(ids), per_image))
  for b, image_id in enumerate(ids):
    h, w = sizes[int(image_id)]
    xy = rng.uniform(0, [w, h, w, h], (per_image, 4))
    boxes[b] = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]),
                               np.maximum(xy[:, :2], xy[:, 2:])], 1)
    gts = by_image.get(int(image_id), [])[:per_image]
    for k, a in enumerate(gts):
      x, y, bw, bh = a['bbox']
      x, y = x + rng.normal(0, 0.1) * bw, y + rng.normal(0, 0.1) * bh
      bw, bh = bw * np.exp(rng.normal(0, 0.1)), bh * np.exp(rng.normal(0, 0.1))
      boxes[b, k] = [x, y, x + bw - 1, y + bh - 1]
      scores[b, k] = rng.uniform(0.2, 1.0)
      classes[b, k] = cats[a['category_id']] if rng.uniform() < 0.9 else classes[b, k]
  return ids, boxes, scores, classes


def eval_rows(data_dir: Path, backends) -> dict:
  from detx.evaluation.coco import CocoEvaluator
  ann_file = data_dir / 'annotations' / 'instances_train2017.json'
  ann = json.loads(ann_file.read_text())
  ids, boxes, scores, classes = detections(ann)
  out = {'images': len(ids), 'detections': int(boxes.shape[0] * boxes.shape[1]),
         'ground_truth': len(ann['annotations'])}
  for backend in backends:
    t0 = time.perf_counter()
    ev = CocoEvaluator(ann_file, backend=backend)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, len(ids), 100):
      ev.add(ids[s:s + 100], boxes[s:s + 100], scores[s:s + 100], classes[s:s + 100])
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = ev.evaluate()
    out[backend] = {'load_s': load_s, 'add_s': add_s,
                    'evaluate_s': time.perf_counter() - t0, 'stats': stats}
    print(f'  eval {backend}: evaluate {out[backend]["evaluate_s"]:.1f} s, '
          f'bbox/AP {stats["bbox/AP"]:.4f}', flush=True)
  if len(backends) > 1:
    a, b = (out[k]['stats'] for k in backends[:2])
    out['max_stat_diff'] = max(abs(a[k] - b[k]) for k in a)
    print(f'  largest stat difference {backends[0]} - {backends[1]}: '
          f'{out["max_stat_diff"]:.2e}', flush=True)
  return out


def markdown(values: dict) -> str:
  lines = ['| images | annotations | prepare img/s | prepare peak RSS MB | of which parsing |'
           ' prepared MB | first batch s | read img/s |', '|---|---|---|---|---|---|---|---|']
  for r in values['scale']:
    lines.append(f"| {r['images']} | {r['annotations']} | {r['prepare_img_s']:.0f} | "
                 f"{r['prepare_peak_rss_mb']:.0f} | "
                 f"{r['parse_peak_rss_mb'] - r['rss_before_parse_mb']:.0f} | {r['prepared_mb']:.0f} | "
                 f"{r['first_batch_s']:.1f} | {r['read_img_s']:.0f} |")
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
  p.add_argument('--sizes', default='5000,10000,20000')
  p.add_argument('--cache', default='/tmp/detx_rehearsal')
  p.add_argument('--read_config', default='faster_rcnn_r50_fpn_1x')
  p.add_argument('--read_batches', type=int, default=5)
  p.add_argument('--eval_images', type=int, default=5000, help='0: no evaluation')
  p.add_argument('--keep_eval', action='store_true',
                 help='with --eval_images=0: copy the eval part of the record --out '
                      'already holds, with its command, commit and date')
  p.add_argument('--backends', default='pycocotools,faster_coco_eval')
  p.add_argument('--out', default='', help='record file under experiments/results/')
  args = p.parse_args(argv)
  if args.child:
    mode, *rest = args.child
    fn = {'prepare': child_prepare, 'parse': child_parse, 'read': child_read}[mode]
    rest = rest[:2] + [rest[2], int(rest[3])] if mode == 'read' else rest
    print(json.dumps(fn(*rest)))
    return
  cache = Path(args.cache)
  values = {'image_size': list(SIZE), 'scale': [], 'eval': None}
  if args.keep_eval and not args.eval_images and args.out:
    old = record.read(args.out)
    values['eval'] = {**old['values']['eval'],
                      'measured_by': {k: old[k] for k in ('command', 'commit', 'date')}}
  for n in [int(s) for s in args.sizes.split(',') if s]:
    values['scale'].append(scale_row(cache, n, args.read_config, args.read_batches))
    if args.out:  # what finished so far
      record.write(args.out, values)
  if args.eval_images:
    values['eval'] = eval_rows(make_set(cache, args.eval_images),
                               [b for b in args.backends.split(',') if b])
  if args.out:
    print('wrote', record.write(args.out, values))
  print(markdown(values))


if __name__ == '__main__':
  main()
