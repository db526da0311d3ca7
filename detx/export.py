r"""Export a run: a params-only checkpoint, and the model's eval program (jax.export).

  python -m detx.export --workdir=WORKDIR --out=DIR [--format=params|inference] \
      [--step=N] [--batch_size=B] [--platforms=cpu,cuda] [--config.a.b=value ...]

The config is the run's WORKDIR/config.json (overrides given here apply on top; one line
says which). DIR gets:

  config.json, categories.json   the config used and the run's categories
  export.json                    format, step, workdir
  checkpoints/<step>/            {'params'(, 'batch_stats')} only, no optimizer state
                                 (orbax, as a workdir's): `detx.predict --checkpoint=DIR`
                                 and `--config.model.pretrained=DIR` read it
  inference/                     --format=inference: the eval program serialised with
                                 jax.export, one file <h>x<w>.jax per static input shape
                                 of the family's eval pipeline (the R-CNN buckets, YOLO's
                                 eval.size), each taking (variables, batch of B images per
                                 device) -> detections, and manifest.json (shapes, batch
                                 fields, B, platforms, step)

`python -m detx.predict --exported=DIR` (or --checkpoint=DIR) runs the serialised program
with the parameters of checkpoints/: no model is built, the Python model code is not
needed. It runs per device, B images each, under shard_map over every device of the mesh.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from detx.errors import UserError

FORMATS = ('params', 'inference')


def eval_shapes(pipeline) -> list[tuple[int, int]]:
  """The (h, w) shapes the pipeline's eval batches take: every eval bucket (batches
  of several images included) for a bucketed pipeline, else its one padding shape."""
  if hasattr(pipeline, 'buckets'):
    return [tuple(int(v) for v in b) for b in pipeline.buckets('eval', eval_batch_size=2)]
  return [tuple(pipeline.padding_example()['image'].shape[:2])]


def _padding(pipeline, shape):
  return (pipeline.padding_example(shape) if hasattr(pipeline, 'buckets')
          else pipeline.padding_example())


def save_params(variables: dict, out: Path, step: int) -> Path:
  """OUT/checkpoints/<step>/: the variables alone, as an orbax checkpoint."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(out.resolve() / 'checkpoints',
                                  options=ocp.CheckpointManagerOptions(create=True))
  try:
    manager.save(step, args=ocp.args.StandardSave(variables), force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return out / 'checkpoints' / str(step)


def export_programs(config, module, variables: dict, out: Path, batch_size: int,
                    platforms=None, step: int = 0) -> dict:
  """OUT/inference/: the eval program for each static eval shape, and its manifest."""
  import jax
  from detx.data import pipelines
  pipeline = pipelines.for_config(config)
  keys = list(module.EVAL_KEYS)
  var_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), variables)
  fn = jax.jit(lambda v, batch: module.apply(v, batch, train=False))
  target = out / 'inference'
  target.mkdir(parents=True, exist_ok=True)
  files = {}
  for shape in eval_shapes(pipeline):
    element = _padding(pipeline, shape)
    specs = {k: jax.ShapeDtypeStruct((batch_size,) + np.shape(element[k]),
                                     np.asarray(element[k]).dtype) for k in keys}
    try:
      exported = jax.export.export(fn, platforms=platforms)(var_specs, specs)
    except (ValueError, NotImplementedError) as e:
      raise UserError(f'cannot export for platforms {platforms}: '
                      f'{" ".join(str(e).split())[:300]}') from None
    name = f'{shape[0]}x{shape[1]}.jax'
    (target / name).write_bytes(exported.serialize())
    files[name] = list(shape)
  manifest = dict(step=step, batch_per_device=batch_size, keys=keys, shapes=files,
                  platforms=list(exported.platforms), model=config.model.name)
  (target / 'manifest.json').write_text(json.dumps(manifest, indent=2))
  return manifest


def export(config, workdir, out, fmt: str = 'inference', step: int | None = None,
           batch_size: int = 0, platforms=None) -> Path:
  """Writes the export of WORKDIR's checkpoint (the latest, or `step`) to OUT."""
  import jax
  from detx import checkpoint, predict, sharding
  if fmt not in FORMATS:
    raise UserError(f'--format={fmt}: expected one of {", ".join(FORMATS)}')
  step_dir = checkpoint.find(workdir)
  if step is not None:
    step_dir = step_dir.parent / str(step)
    if not step_dir.is_dir():
      steps = sorted(int(p.name) for p in step_dir.parent.iterdir() if p.name.isdigit())
      raise UserError(f'--step={step}: no such checkpoint in {workdir} (steps: {steps})')
  out = Path(out).expanduser()
  if out.resolve() == predict.run_dir(workdir):
    raise UserError(f'--out {out} is the workdir itself: give another directory')
  if out.is_dir() and any(out.iterdir()):
    if not (out / 'export.json').is_file():
      raise UserError(f'--out {out} is not empty and holds no export: give a new directory')
    for name in ('checkpoints', 'inference'):  # a previous export: replaced
      shutil.rmtree(out / name, ignore_errors=True)
  out.mkdir(parents=True, exist_ok=True)
  module, variables = predict.restore_variables(config, step_dir, sharding.make_mesh())
  variables = jax.device_get(variables)
  save_params(variables, out, int(step_dir.name))
  (out / 'config.json').write_text(config.to_json_best_effort(indent=2))
  categories = predict.run_dir(workdir) / 'categories.json'
  if categories.is_file():
    shutil.copyfile(categories, out / 'categories.json')
  if fmt == 'inference':
    export_programs(config, module, variables, out, batch_size or config.eval.batch_size,
                    platforms, int(step_dir.name))
  (out / 'export.json').write_text(json.dumps(
      dict(format=fmt, step=int(step_dir.name), workdir=str(predict.run_dir(workdir)))))
  return out


class ExportedModel:
  """A detx.export directory's serialised eval program with its parameters, run on
  every device of the mesh (B images per device): batch (numpy) -> detections (numpy)."""

  def __init__(self, directory, mesh):
    import jax
    from detx import checkpoint, sharding
    directory = Path(directory)
    self.manifest = json.loads((directory / 'inference' / 'manifest.json').read_text())
    self.programs = {tuple(shape): jax.export.deserialize(
        bytearray((directory / 'inference' / name).read_bytes()))
        for name, shape in self.manifest['shapes'].items()}
    self.keys = tuple(self.manifest['keys'])
    self.mesh = mesh
    self.batch_size = self.manifest['batch_per_device'] * mesh.devices.size
    variables = checkpoint.restore_variables(directory)
    self.variables = jax.device_put(variables, sharding.replicated(mesh))
    self._compiled = {}

  def _function(self, shape):
    import jax
    from jax.sharding import PartitionSpec as P
    if shape not in self.programs:
      raise UserError(f'the exported program takes images padded to '
                      f'{sorted(self.programs)}, not {shape}: predict with the export\'s '
                      'config (pipeline keys such as eval.size, data.max_size unchanged)')
    if shape not in self._compiled:
      program = self.programs[shape]
      per_device = jax.shard_map(lambda v, x: program.call(v, x), mesh=self.mesh,
                                 in_specs=(P(), P('data')), out_specs=P('data'))
      self._compiled[shape] = jax.jit(per_device)
    return self._compiled[shape]

  def __call__(self, batch: dict) -> dict:
    import jax
    from detx import sharding
    inputs = {k: batch[k] for k in self.keys}
    fn = self._function(tuple(int(v) for v in inputs['image'].shape[1:3]))
    return jax.device_get(fn(self.variables, sharding.shard_batch(inputs, self.mesh)))


def main(argv, flag_values):
  from detx import checkpoint, predict, run_config
  workdir = run_config.flag_value(argv[1:], 'workdir')
  if not workdir:
    raise UserError('--workdir=WORKDIR is required')
  checkpoint.find(workdir)  # before the config: a missing checkpoint is one line
  config, line = predict.parse_with_run_config(argv, predict.run_dir(workdir), flag_values)
  print(f'export: {line}', flush=True)
  if not flag_values.out:
    raise UserError('--out=DIR is required')
  platforms = [p for p in flag_values.platforms.split(',') if p] or None
  out = export(config, workdir, flag_values.out, flag_values.format, flag_values.step,
               flag_values.batch_size, platforms)
  print(f'export: wrote {flag_values.format} export of {workdir} to {out}', flush=True)


def cli_run(argv) -> int:
  """`python -m detx.export ARGS` in-process: the exit code (0, or 2 after a user
  mistake's one line)."""
  from absl import flags
  from detx import errors, predict
  fv = predict.define_flags(flags.FlagValues(), 'export')
  flags.DEFINE_string('workdir', None, 'The run to export.', flag_values=fv)
  flags.DEFINE_string('out', None, 'The export directory.', flag_values=fv)
  flags.DEFINE_enum('format', 'inference', list(FORMATS), 'params: the params-only '
                    'checkpoint; inference: that and the jax.export program.', flag_values=fv)
  flags.DEFINE_integer('step', None, 'The checkpoint step (default: the latest).',
                       flag_values=fv)
  flags.DEFINE_integer('batch_size', 0, 'Images per device of the exported program '
                       '(default eval.batch_size).', flag_values=fv)
  flags.DEFINE_string('platforms', '', 'jax.export platforms, e.g. cpu,cuda (default: '
                      'this machine\'s).', flag_values=fv)
  argv = list(argv)
  if any(a.lstrip('-') in ('help', 'h', 'helpfull') for a in argv[1:]):
    print(__doc__ + '\n' + fv.get_help())
    return 0
  return errors.guard(lambda: main(argv, fv), argv)


if __name__ == '__main__':
  import sys
  sys.exit(cli_run(sys.argv))
