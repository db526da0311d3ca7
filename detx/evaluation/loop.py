"""The evaluation loop: a model's detections on eval.split, scored by eval.metric.

``evaluate`` runs the jitted eval step over the split (the pipeline's eval batches,
padded to its fixed shapes), pastes masks for mask models, feeds the evaluator that
``config.eval.metric`` names in ``EVALUATORS`` and returns its metrics (``bbox/AP``,
``segm/AP``, ``voc/mAP``, ...) with ``eval/images``, ``eval/img_per_s`` and the compile
counts, and the evaluator's per-class AP (per size of eval.sizes, as bbox@416/AP, when
set); ``evaluate_checkpoint`` does that for a
checkpoint of a workdir (detx.checkpoint.select: the latest, a step, the best) and
prints the full report (detx.evaluation.report).
"""
import json
import time
from pathlib import Path

import flax
import jax
from jax.experimental import multihost_utils

from detx import checkpoint, metrics, sharding
from detx.errors import ConfigError
from detx.data import loader, pipelines
from detx.evaluation import report, voc
from detx.evaluation.coco import CocoEvaluator
from detx.models.base import build_model, family, model_inputs
from detx.optim import make_optimizer
from detx.visualize import draw_detections


def coco_evaluator(config, dataset):
  """COCOeval on the dataset's annotation file: bbox, and segm for mask models."""
  if getattr(dataset, 'name', 'coco') == 'voc':
    raise ConfigError("eval.metric='coco' needs a COCO-format dataset; VOC data "
                      "(data.name='voc') is scored with --config.eval.metric=voc")
  return CocoEvaluator(dataset.annotation_file, dataset.category_ids,
                       image_ids=dataset.image_ids,
                       iou_types=('bbox', 'segm') if family(config).has_masks else ('bbox',),
                       backend=config.eval.get('backend', 'pycocotools'))


# eval.metric -> (config, dataset) -> an evaluator with add(image_ids, boxes, scores,
# classes, valid, masks=None) and evaluate() -> {metric name: value}.
EVALUATORS = {
    'coco': coco_evaluator,
    'voc': voc.dataset_evaluator,  # voc/mAP and voc/AP/<class>
}


def make_evaluator(config, dataset):
  """The evaluator of config.eval.metric for `dataset`."""
  metric = config.eval.metric
  if metric not in EVALUATORS:
    raise ConfigError(f'unknown eval.metric {metric!r}; known: {", ".join(EVALUATORS)}')
  return EVALUATORS[metric](config, dataset)


def make_eval_step(module, mesh):
  def eval_fn(variables, batch):
    return module.apply(variables, batch, train=False)
  # Variables keep the sharding they have (replicated or FSDP).
  return jax.jit(eval_fn, out_shardings=sharding.batch_sharding(mesh))


def pasted_masks(dets, valid, orig_size) -> list:
  """Per image, the mask probabilities [K, M, M] pasted into the original image as
  COCO RLEs (None where not valid)."""
  from detx.ops.masks import paste_masks
  return [paste_masks(dets['masks'][b], dets['boxes'][b], valid[b], orig_size[b])
          for b in range(len(valid))]


def eval_sizes(config) -> list[int]:
  """eval.sizes (the zoo's 608 / 416 / 320 columns of a YOLOv3 row), [] when unset."""
  sizes = list(config.eval.get('sizes', ()) or ())
  if sizes and family(config).pipeline != 'yolo':
    raise ConfigError(f'eval.sizes applies to square-input (YOLOv3) models; '
                      f'{config.model.name} sets its eval size through its data keys')
  if any(not isinstance(s, int) or s <= 0 or s % 32 for s in sizes) or len(set(sizes)) < len(sizes):
    raise ConfigError(f'eval.sizes must be distinct positive multiples of 32, got {tuple(sizes)}')
  return sizes


def at_size(results: dict, size: int) -> dict:
  """`results` with the size in each metric's prefix: bbox/AP -> bbox@416/AP,
  eval/images -> eval@416/images (the compile counts are per run, left out)."""
  return {k.replace('/', f'@{size}/', 1): v for k, v in results.items()
          if '/' in k and not k.startswith('jit/')}


def evaluate(config, module, variables, mesh, eval_step=None, dataset=None, writer=None,
             step=0, report_dir=None) -> dict:
  """eval.metric of `variables` on eval.split (the first eval.limit images), with the
  per-class AP (report.per_class_key). `report_dir`: also print the full report and
  write it there with the detections and the precision-recall image (report.publish).

  eval.sizes: one evaluation per size, each one's metrics under its own prefix
  (at_size: bbox@416/AP); the first size's are also the plain keys (bbox/AP: the
  headline, train.best_metric) and its report goes to `report_dir`, the others' to
  `report_dir`/<size>/."""
  if dataset is None:
    dataset = loader.build(config, config.eval.split)
    loader.check_num_classes(config, dataset, evaluating=True)
  eval_step = eval_step or make_eval_step(module, mesh)
  results = {}
  for i, size in enumerate(eval_sizes(config) or [None]):
    sized = config
    if size is not None:
      sized = config.copy_and_resolve_references()
      sized.eval.size = size
    one = _evaluate(sized, module, variables, mesh, eval_step, dataset,
                    writer if i == 0 else None, step, report_dir if i == 0 or report_dir is None
                    else Path(report_dir) / str(size))
    if size is not None:
      results.update(at_size(one, size))
      print(f'detx: eval at {size}: ' + json.dumps(report.headline(one)), flush=True)
    if i == 0:
      results.update(one)
  results.update(metrics.compile_counts())
  if writer is not None:
    writer.write(step, results)
  return results


def _evaluate(config, module, variables, mesh, eval_step, dataset, writer, step,
              report_dir) -> dict:
  """One evaluation at the pipeline's eval size (evaluate without eval.sizes)."""
  n_dev = mesh.devices.size
  batch_size = -(-config.eval.batch_size // n_dev) * n_dev
  has_masks = family(config).has_masks
  evaluator = make_evaluator(config, dataset)
  t0, seen, drawn, next_report = time.time(), 0, [], 1
  # closed on every exit (an error in this loop too): the loader's workers and their
  # shared memory are released here, not at interpreter exit
  with pipelines.for_config(config).eval_iterator(dataset, batch_size=batch_size) as batches:
    for batch in batches:
      inputs = model_inputs(module, batch, False)
      if jax.process_count() > 1:  # every process reads the whole eval batch, feeds its rows
        rows, first = loader.process_rows(len(batch['valid']))
        inputs = {k: v[first:first + rows] for k, v in inputs.items()}
        dets = multihost_utils.process_allgather(eval_step(variables, sharding.shard_batch(inputs, mesh)), tiled=True)
      else:
        dets = jax.device_get(eval_step(variables, sharding.shard_batch(inputs, mesh)))
      valid = dets['valid'] & batch['valid'][:, None]
      masks = pasted_masks(dets, valid, batch['orig_size']) if has_masks else None
      evaluator.add(batch['image_id'], dets['boxes'], dets['scores'], dets['classes'], valid,
                    masks=masks)
      seen += int(batch['valid'].sum())
      if seen >= next_report or seen == dataset.num_images:
        rate = seen / max(time.time() - t0, 1e-9)
        print(f'eval {seen}/{dataset.num_images} images {rate:.1f} img/s '
              f'eta {(dataset.num_images - seen) / max(rate, 1e-9) / 60:.1f} min', flush=True)
        next_report = seen + max(1, dataset.num_images // 5)
      if writer is not None and len(drawn) < config.eval.draw_images:
        drawn += [(seen - int(batch['valid'].sum()) + i, {k: v[i] for k, v in dets.items()})
                  for i in range(len(valid)) if batch['valid'][i]][:config.eval.draw_images - len(drawn)]
  results = evaluator.evaluate()
  summary = (evaluator.report(dataset.category_names) if hasattr(evaluator, 'report')
             else report.plain(results))
  results.update(summary.per_class)
  for index, det in drawn:  # the same first val images at every evaluation
    keep = det['valid']
    image = draw_detections(dataset[index]['image'], det['boxes'][keep], det['scores'][keep],
                            det['classes'][keep], dataset.category_names, score_threshold=0.3)
    writer.image(step, f'predictions/{int(dataset.image_ids[index])}', image)
  results['eval/images'] = seen
  results['eval/img_per_s'] = seen / max(time.time() - t0, 1e-9)
  if report_dir is not None and jax.process_index() == 0:
    report.publish(summary, evaluator, report_dir, writer, step)
  return results


def restore_state(config, checkpoint_path, mesh):
  """(module, TrainState) of config's model, restored from a workdir (its latest step),
  its checkpoints/ directory or one step directory."""
  from detx import train
  module, rules = build_model(config)
  tx, _ = make_optimizer(config, rules)
  state = train.init_state(config, module, tx, mesh)
  state = flax.serialization.from_state_dict(
      state, checkpoint.restore_variables(checkpoint_path, state.as_dict()))
  return module, state


def evaluate_checkpoint(config, workdir, step_dir=None) -> dict:
  """Evaluates a checkpoint of WORKDIR (`step_dir`, from checkpoint.select; default the
  latest) and publishes the full report in WORKDIR/eval/<step>/. A missing checkpoint
  is refused before the model is built; keys that differ from WORKDIR/config.json are
  printed."""
  from detx import workdir as wd
  step_dir = step_dir or checkpoint.find(workdir)
  changes = wd.check_config(config, workdir, refuse=False)
  if changes:
    print(f'detx: config differs from {workdir}/config.json in {wd.describe(changes, 20)}',
          flush=True)
  metrics.install_compile_counter()
  mesh = sharding.make_mesh()
  module, state = restore_state(config, step_dir, mesh)
  writer = metrics.MetricWriter(workdir)
  step = int(jax.device_get(state.step))
  print(f'detx: evaluating {step_dir} (step {step})', flush=True)
  try:
    result = evaluate(config, module, state.variables(), mesh, writer=writer, step=step,
                      report_dir=Path(workdir) / 'eval' / str(step))
  finally:
    writer.close()
  return result
