"""Views and batches augmented on the accelerator: the device twin of
augment.View.finish, built from the same spec strings.

`device_view(spec)` is the part of a view that `augment.View.finish` runs on
the host, as JAX ops (device_ops.py): the ops after the last size-setting
one, their arguments checked with the host's messages. `batch_augmenter`
maps a per-device batch of a stream made with `pipeline.pretrain_stream(...,
augment_on_device=True)` to the batch the default stream would have held,
to float rounding; method_steps.build runs it first in the train step when
`config.augment_on_device`. Imports no TensorFlow.
"""

from contrastive_jax.data import op_args
from contrastive_jax.data import op_table
from contrastive_jax.data import view_spec

# The device functions of data/op_table.py's size-keeping ops, by name.
OPS = {name: spec.device_factory() for name, spec in op_table.OPS.items()
       if spec.device is not None}


def _tail_start(parsed):
  """Index of the first op after the last size-setting one: where the
  host's View stops running ops per example (augment.View)."""
  starts = [i + 1 for i, (name, _, _) in enumerate(parsed)
            if name in view_spec.SIZE_OPS]
  return max(starts, default=0)


def size_keeping_tail(spec, field='view_augment'):
  """The part of `spec` after its last size-setting op, as a spec string
  ('' when nothing follows it)."""
  parsed = view_spec.parse(spec, field)
  parts = spec.split('|') if parsed else []
  return '|'.join(part.strip() for part in parts[_tail_start(parsed):])


class DeviceView:
  """The size-keeping tail of a view: `view(images, uniforms)` is the host
  `View.finish` on float32 [B, H, W, C] images and the [B, num_uniforms]
  uniforms that `View.prepare` drew for them."""

  def __init__(self, ops):
    self._ops = ops
    self.num_uniforms = sum(op.num_uniforms for op in ops)

  def __call__(self, images, uniforms):
    if uniforms.shape[-1] != self.num_uniforms:
      raise ValueError(f'expected {self.num_uniforms} uniforms per example, '
                       f'got shape {uniforms.shape}')
    start = 0
    for op in self._ops:
      images = op.apply(images, uniforms[:, start:start + op.num_uniforms])
      start += op.num_uniforms
    return images


def device_view(spec, field='view_augment'):
  """The `DeviceView` of `spec`'s ops after its last size-setting op, their
  arguments checked as augment.build_view checks them (the same
  ConfigErrors, naming `field`)."""
  parsed = view_spec.parse(spec, field)
  for name, _, _ in parsed:
    op_table.spec_of(name, spec, field)
  ops = []
  for name, args, kwargs in parsed[_tail_start(parsed):]:
    ops.append(op_args.build_op(OPS[name], name, args, kwargs, spec=spec,
                                field=field))
  return DeviceView(ops)


def batch_augmenter(view_specs, view_fields=None):
  """`augment_batch(batch) -> batch` for the per-device batch of a stream
  made with `pipeline.pretrain_stream(..., augment_on_device=True)`: view i
  ('view{i}', i from 1) goes through the tail of view_specs[i - 1] with
  'uniforms{i}', and the uniforms keys are dropped; other keys pass.
  `view_fields` names each spec's config field in errors (as the
  pipeline's)."""
  if view_fields is None:
    view_fields = (['view_augment', 'view_augment_2'] +
                   [f'extra_views[{i}]' for i in range(len(view_specs) - 2)])
  views = [device_view(spec, field)
           for spec, field in zip(view_specs, view_fields)]

  def augment_batch(batch):
    if view_spec.uniforms_key(1) not in batch:
      raise ValueError('the batch holds no uniforms: make the stream with '
                       'pipeline.pretrain_stream(..., augment_on_device=True)')
    out = {key: value for key, value in batch.items()
           if not key.startswith('uniforms')}
    for i, view in enumerate(views):
      out[view_spec.view_key(i + 1)] = view(
          batch[view_spec.view_key(i + 1)],
          batch[view_spec.uniforms_key(i + 1)])
    return out

  augment_batch.num_uniforms = [view.num_uniforms for view in views]
  return augment_batch
