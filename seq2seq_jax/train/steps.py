"""Pure training pieces: state, optimizer, masked loss, `train_step` and `eval_step`.

Steps return token-weighted sums (`loss`, `correct`) and their denominator `tokens`, the
number of real target tokens, so that padding never skews an average: divide on the host
after accumulating. With `axis_name` set the same functions run under `jax.pmap`: the
gradient of the summed loss and the token count are summed over devices, so N devices
with global batch B compute what one device computes with batch B.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from seq2seq_jax import errors
from seq2seq_jax.data import text

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (the model and optimizer are fixed)."""

  step: Array
  params: Any
  opt_state: Any


def make_optimizer(
  *,
  learning_rate: float,
  grad_clip: float = 1.0,
  schedule: str = 'constant',
  warmup_steps: int = 0,
  total_steps: int = 1,
  weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """Adam with global-norm clipping (the seed clips at 1.0) and an optional schedule."""
  if learning_rate <= 0:
    raise errors.ConfigError(f'train.learning_rate must be positive, got {learning_rate}')
  if schedule == 'constant':
    lr = optax.constant_schedule(learning_rate)
    if warmup_steps > 0:
      lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
      lr = optax.join_schedules([lr, optax.constant_schedule(learning_rate)], [warmup_steps])
  elif schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(
      0.0,
      learning_rate,
      max(warmup_steps, 1),
      max(total_steps, warmup_steps + 1),
      end_value=0.1 * learning_rate,
    )
  elif schedule == 'rsqrt':
    warm = max(warmup_steps, 1)

    def lr(step: Array) -> Array:
      step = jnp.maximum(step, 1)
      return learning_rate * jnp.minimum(step / warm, jnp.sqrt(warm / step))
  else:
    raise errors.ConfigError(
      f"train.schedule must be 'constant', 'cosine' or 'rsqrt', got {schedule!r}"
    )
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
  return optax.chain(*parts, opt)


def init_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  key: Array,
  batch_shape: tuple[int, int] = (2, 4),
) -> TrainState:
  """Initialises parameters and optimizer state (shapes do not depend on batch_shape)."""
  ids = jnp.ones(batch_shape, jnp.int32)
  lengths = jnp.full(batch_shape[:1], batch_shape[1], jnp.int32)
  params = model.init({'params': key}, ids, lengths, ids)['params']
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params))


def token_losses(logits: Array, labels: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """Per-token cross-entropy (optionally smoothed) and the plain one, both [batch, time].

  The values are `log_softmax`'s, term for term; the gradient is written by hand as one
  fused pass (`softmax - one_hot`, scaled), so that neither log-probabilities nor a
  one-hot scatter of shape [batch, time, vocab] is materialised (docs/performance.md)."""
  return _cross_entropy(logits.astype(jnp.float32), labels, float(max(label_smoothing, 0.0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits: Array, labels: Array, smoothing: float) -> tuple[Array, Array]:
  return _cross_entropy_fwd(logits, labels, smoothing)[0]


def _cross_entropy_fwd(
  logits: Array, labels: Array, smoothing: float
) -> tuple[tuple[Array, Array], tuple[Array, ...]]:
  shift = jnp.max(logits, axis=-1, keepdims=True)
  exps = jnp.exp(logits - shift)  # kept for the gradient: one exp pass in all
  total = jnp.sum(exps, axis=-1)
  log_sum = jnp.log(total)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  nll = log_sum - (label_logit - shift[..., 0])  # -log_softmax(logits)[label]
  loss = nll
  if smoothing > 0:  # -mean(log_softmax(logits))
    smooth = log_sum - jnp.mean(logits - shift, axis=-1)
    loss = (1.0 - smoothing) * nll + smoothing * smooth
  return (loss, nll), (exps, labels, total)


def _cross_entropy_bwd(
  smoothing: float, res: tuple[Array, ...], cotangents: tuple[Array, Array]
) -> tuple[Array, None]:
  exps, labels, total = res
  d_loss, d_nll = cotangents
  d_lse = (d_loss + d_nll) / total  # both outputs hold logsumexp once; softmax = exps / total
  d_label = ((1.0 - smoothing) * d_loss + d_nll)[..., None]
  one_hot = labels[..., None] == jnp.arange(exps.shape[-1], dtype=labels.dtype)
  d_logits = exps * d_lse[..., None] - jnp.where(one_hot, d_label, 0.0)
  if smoothing > 0:
    d_logits = d_logits - (smoothing / exps.shape[-1]) * d_loss[..., None]
  return d_logits, None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def is_argmax(logits: Array, labels: Array) -> Array:
  """`jnp.argmax(logits, -1) == labels` for finite logits, without an argmax: the label's
  logit is the maximum and no earlier entry equals it. Plain reductions that XLA fuses,
  ~10x faster on CPU than its (value, index) argmax reduction over a large vocabulary."""
  best = jnp.max(logits, axis=-1, keepdims=True)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)
  position = jax.lax.broadcasted_iota(labels.dtype, logits.shape, logits.ndim - 1)
  tie_before = jnp.any((logits == best) & (position < labels[..., None]), axis=-1)
  return (label_logit[..., 0] == best[..., 0]) & ~tie_before


def loss_terms(
  model: nn.Module,
  params: Any,
  batch: Batch,
  *,
  train: bool,
  rng: Array | None = None,
  label_smoothing: float = 0.0,
) -> tuple[Array, Metrics]:
  """The summed (masked) training loss and metric sums for one batch."""
  rngs = {'dropout': rng} if rng is not None else None
  logits = model.apply(
    {'params': params}, batch['src'], batch['src_len'], batch['tgt_in'], train=train, rngs=rngs
  )
  return _sums(logits, batch['tgt_out'], label_smoothing)


def _sums(logits: Array, labels: Array, label_smoothing: float = 0.0) -> tuple[Array, Metrics]:
  """The summed (masked) loss and the metric sums of logits against their labels."""
  mask = (labels != text.PAD_ID).astype(jnp.float32)
  loss, nll = token_losses(logits, labels, label_smoothing)
  correct = is_argmax(logits, labels).astype(jnp.float32)
  metrics = {
    'loss': jnp.sum(nll * mask),
    'correct': jnp.sum(correct * mask),
    'tokens': jnp.sum(mask),
  }
  return jnp.sum(loss * mask), metrics


def _psum(tree: Any, axis_name: str | None) -> Any:
  return jax.lax.psum(tree, axis_name) if axis_name else tree


def _accumulated(
  grad_fn: Any, params: Any, batch: Batch, rng: Array, k: int
) -> tuple[Any, Metrics]:
  """The summed gradients and metrics of `grad_fn(params, micro, key)` over `k`
  micro-batches, one at a time in a `lax.scan` (micro-batch i draws its dropout from
  `fold_in(rng, i)`)."""
  # Micro-batch i takes rows i, i + K, i + 2K, ...: a device holding a contiguous block
  # of rows (a batch sharded over a mesh, or its pmap share) splits it locally.
  micro_batches = jax.tree.map(
    lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch
  )

  def accumulate(carry: tuple[Any, Metrics], xs: tuple[Batch, Array]) -> tuple[Any, None]:
    micro, i = xs
    g, m = grad_fn(params, micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (g, m)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  zero_metrics = {name: jnp.zeros((), jnp.float32) for name in ('loss', 'correct', 'tokens')}
  (grads, metrics), _ = jax.lax.scan(
    accumulate, (zeros, zero_metrics), (micro_batches, jnp.arange(k))
  )
  return grads, metrics


def train_step(
  state: TrainState,
  batch: Batch,
  dropout_key: Array,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  label_smoothing: float = 0.0,
  axis_name: str | None = None,
  grad_accum_steps: int = 1,
) -> tuple[TrainState, Metrics]:
  """One optimizer step on the batch's mean token loss. Pure; jit or pmap it.

  `grad_accum_steps` K > 1 splits the batch into K micro-batches of B/K rows and sums
  their gradients in a `lax.scan` inside this one program (activations of one
  micro-batch at a time), then takes the same optimizer step as on the whole batch:
  the loss is still divided by the whole batch's token count. Dropout masks differ (each
  micro-batch draws its own), everything else equals the K-times larger batch."""
  rng = jax.random.fold_in(dropout_key, state.step)
  if axis_name:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

  # The gradient of the summed loss over all devices' tokens, divided by their number:
  # the division is applied to the loss (a scalar) rather than to every gradient array.
  tokens = _psum(jnp.sum(batch['tgt_out'] != text.PAD_ID).astype(jnp.float32), axis_name)
  scale = 1.0 / jnp.maximum(tokens, 1.0)

  def loss_fn(params: Any, micro: Batch, key: Array) -> tuple[Array, Metrics]:
    loss, metrics = loss_terms(
      model, params, micro, train=True, rng=key, label_smoothing=label_smoothing
    )
    return loss * scale, metrics

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if grad_accum_steps <= 1:
    grads, metrics = grad_fn(state.params, batch, rng)
  else:
    grads, metrics = _accumulated(grad_fn, state.params, batch, rng, grad_accum_steps)
  grads, metrics = _psum((grads, metrics), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics['grad_norm'] = optax.tree.norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


EVAL_LOGITS_BYTES = 1 << 27  # the float32 logits of an evaluation slice: at most 128 MiB


def eval_slices(rows: int, width: int, vocab: int, logits_bytes: int = EVAL_LOGITS_BYTES) -> int:
  """Into how many slices `eval_step` cuts a batch of `rows` x `width` target tokens: the
  fewest (a divisor of `rows`) whose float32 logits take at most `logits_bytes` each."""
  per_row = width * vocab * 4
  for k in range(1, rows + 1):
    if rows % k == 0 and rows // k * per_row <= logits_bytes:
      return k
  return rows  # one row is over the bound already: a row at a time


def eval_step(
  params: Any,
  batch: Batch,
  *,
  model: nn.Module,
  axis_name: str | None = None,
  logits_bytes: int = EVAL_LOGITS_BYTES,
) -> Metrics:
  """Metric sums over one batch (no dropout). The encoder and the decoder's recurrent
  layers run on the whole batch; the output layer and the loss run on slices of its rows
  (`eval_slices`, one after another in a `lax.map`), so that an evaluation holds at most
  `logits_bytes` of logits at a time, whatever `eval.batch_size`, the lengths and the
  vocabulary: the same sums as one pass over the batch."""
  rows, width = batch['tgt_out'].shape
  vocab = getattr(model, 'tgt_vocab_size', 0)  # the optional part of a family's model
  slices = eval_slices(rows, width, vocab, logits_bytes) if vocab else 1
  if slices == 1 or not (hasattr(model, 'features') and hasattr(model, 'project')):
    _, metrics = loss_terms(model, params, batch, train=False)
    return _psum(metrics, axis_name)
  feats = model.apply(
    {'params': params},
    batch['src'],
    batch['src_len'],
    batch['tgt_in'],
    train=False,
    method=type(model).features,
  )

  def sliced(x: Array) -> Array:  # slice i: rows i, i + K, ... (local to each device's block)
    return x.reshape(rows // slices, slices, *x.shape[1:]).swapaxes(0, 1)

  def one(xs: tuple[Array, Array]) -> Metrics:
    logits = model.apply({'params': params}, xs[0], method=type(model).project)
    return _sums(logits, xs[1])[1]

  per_slice = jax.lax.map(one, (sliced(feats), sliced(batch['tgt_out'])))
  return _psum(jax.tree.map(lambda v: jnp.sum(v, axis=0), per_slice), axis_name)
