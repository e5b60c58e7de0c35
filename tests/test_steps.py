"""Tests for the training pieces: masked loss, optimizer, `train_step` and `eval_step`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seq2seq_jax import models
from seq2seq_jax.data import text
from seq2seq_jax.train import steps

# A tiny model and task: reverse sequences of 3-5 symbols drawn from 10.
SYMBOLS, NUM_EXAMPLES, WIDTH = 10, 200, 6
VOCAB = len(text.RESERVED) + SYMBOLS
Batch = dict[str, Any]


def _key(seed: int) -> jax.Array:
  # 'unsafe_rbg' keys compile much faster on CPU than threefry; nothing here depends on it.
  return jax.random.key(seed, impl='unsafe_rbg')


def _model(dropout: float = 0.0, num_layers: int = 1) -> models.EncoderDecoder:
  return models.build_model(
    src_vocab_size=VOCAB,
    tgt_vocab_size=VOCAB,
    embed_size=32,
    num_hiddens=32,
    num_layers=num_layers,
    dropout=dropout,
  )


def _reverse_batch(n: int = NUM_EXAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
  """Sources of 3-5 symbols (+ <eos>), targets their reversal, padded to WIDTH."""
  rng = np.random.default_rng(seed)
  batch = {k: np.zeros((n, WIDTH), np.int32) for k in ('src', 'tgt_in', 'tgt_out')}
  batch['src_len'] = np.zeros(n, np.int32)
  for i in range(n):
    seq = list(rng.integers(len(text.RESERVED), VOCAB, rng.integers(3, 6)))
    src, tgt = seq + [text.EOS_ID], seq[::-1] + [text.EOS_ID]
    batch['src'][i, : len(src)] = src
    batch['src_len'][i] = len(src)
    batch['tgt_out'][i, : len(tgt)] = tgt
    batch['tgt_in'][i, : len(tgt)] = [text.BOS_ID] + tgt[:-1]
  return batch


def _pad_batch(batch: dict[str, np.ndarray], cols: int, rows: int) -> dict[str, np.ndarray]:
  """More padding columns and empty rows (src_len 0, no target tokens)."""
  out = {}
  for k, v in batch.items():
    pad = ((0, rows),) if v.ndim == 1 else ((0, rows), (0, cols))
    out[k] = np.pad(v, pad)
  return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_losses_by_hand() -> None:
  logits = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[2.0, -1.0, 0.5], [5.0, 5.0, -5.0]]])
  labels = np.array([[2, 0], [1, 1]])
  loss, nll = steps.token_losses(jnp.asarray(logits), jnp.asarray(labels))
  expected = np.array(
    [
      [np.log(np.exp(1) + np.exp(2) + np.exp(3)) - 3.0, np.log(3.0)],
      [np.log(np.exp(2) + np.exp(-1) + np.exp(0.5)) + 1.0, np.log(2 + np.exp(-10)) - 0.0],
    ]
  )
  np.testing.assert_allclose(nll, expected, rtol=1e-6)
  np.testing.assert_array_equal(loss, nll)  # no smoothing: the loss is the plain NLL
  loss0, nll0 = steps.token_losses(jnp.asarray(logits), jnp.asarray(labels), 0.0)
  np.testing.assert_array_equal(loss0, nll0)
  np.testing.assert_allclose(loss0, expected, rtol=1e-6)
  # Smoothing eps mixes in the mean NLL over the whole vocabulary; nll stays plain.
  smoothed, nll_s = steps.token_losses(jnp.asarray(logits), jnp.asarray(labels), 0.1)
  uniform = -_log_softmax(logits).mean(-1)
  np.testing.assert_allclose(smoothed, 0.9 * expected + 0.1 * uniform, rtol=1e-6)
  np.testing.assert_allclose(nll_s, expected, rtol=1e-6)


class Tiny(NamedTuple):
  model: models.EncoderDecoder
  params: Any
  forward: Callable[[Any, Batch], dict[str, Any]]


def _init_params(model: models.EncoderDecoder, seed: int) -> Any:
  tx = steps.make_optimizer(learning_rate=0.01)
  return jax.jit(lambda key: steps.init_state(model, tx, key))(_key(seed)).params


@pytest.fixture(scope='module')
def tiny() -> Tiny:
  model = _model()

  @jax.jit
  def forward(params: Any, batch: Batch) -> dict[str, Any]:
    loss, metrics = steps.loss_terms(model, params, batch, train=False)
    smoothed, smoothed_metrics = steps.loss_terms(
      model, params, batch, train=False, label_smoothing=0.2
    )
    logits = model.apply({'params': params}, batch['src'], batch['src_len'], batch['tgt_in'])
    return dict(
      loss=loss,
      metrics=metrics,
      smoothed=smoothed,
      smoothed_metrics=smoothed_metrics,
      logits=logits,
      eval=steps.eval_step(params, batch, model=model),
    )

  return Tiny(model, _init_params(model, 0), forward)


def test_loss_terms_masked_sums_by_hand(tiny: Tiny) -> None:
  batch = _reverse_batch(8, seed=1)
  out = tiny.forward(tiny.params, batch)
  logits, metrics = np.asarray(out['logits']), out['metrics']
  labels, mask = batch['tgt_out'], batch['tgt_out'] != text.PAD_ID
  nll = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0]
  assert float(metrics['tokens']) == mask.sum() == batch['src_len'].sum()
  np.testing.assert_allclose(metrics['loss'], nll[mask].sum(), rtol=1e-5)
  np.testing.assert_allclose(out['loss'], nll[mask].sum(), rtol=1e-5)
  assert float(metrics['correct']) == (logits.argmax(-1) == labels)[mask].sum()
  for k in ('loss', 'correct', 'tokens'):
    np.testing.assert_allclose(out['eval'][k], metrics[k], rtol=1e-6)


def test_label_smoothing_changes_the_objective_not_the_metrics(tiny: Tiny) -> None:
  batch = _reverse_batch(8, seed=1)
  out = tiny.forward(tiny.params, batch)
  logp = _log_softmax(np.asarray(out['logits']))
  mask = batch['tgt_out'] != text.PAD_ID
  nll = -np.take_along_axis(logp, batch['tgt_out'][..., None], -1)[..., 0]
  expected = (0.8 * nll - 0.2 * logp.mean(-1))[mask].sum()
  np.testing.assert_allclose(out['smoothed'], expected, rtol=1e-5)
  for k in ('loss', 'correct', 'tokens'):  # the metrics stay the plain NLL and accuracy
    np.testing.assert_allclose(out['smoothed_metrics'][k], out['metrics'][k], rtol=1e-6)


def test_loss_ignores_padding(tiny: Tiny) -> None:
  batch = _reverse_batch(8, seed=1)
  metrics = tiny.forward(tiny.params, batch)['metrics']
  padded = tiny.forward(tiny.params, _pad_batch(batch, cols=3, rows=2))
  assert float(padded['metrics']['tokens']) == float(metrics['tokens'])
  assert float(padded['metrics']['correct']) == float(metrics['correct'])
  np.testing.assert_allclose(padded['metrics']['loss'], metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(
    padded['metrics']['loss'] / padded['metrics']['tokens'],
    metrics['loss'] / metrics['tokens'],
    rtol=1e-5,
  )
  np.testing.assert_allclose(padded['eval']['loss'], metrics['loss'], rtol=1e-5)


def _jit_step(model: models.EncoderDecoder, tx: optax.GradientTransformation, **kw: Any) -> Any:
  return jax.jit(functools.partial(steps.train_step, model=model, tx=tx, **kw))


def test_train_step_learns_to_reverse(tiny: Tiny) -> None:
  tx = steps.make_optimizer(learning_rate=0.02)
  state = steps.TrainState(
    step=jnp.asarray(0, jnp.int32), params=tiny.params, opt_state=tx.init(tiny.params)
  )
  step = _jit_step(tiny.model, tx)
  batch = jax.tree.map(jnp.asarray, _reverse_batch())
  key = _key(2)
  first = None
  for _ in range(300):
    state, metrics = step(state, batch, key)
    per_token = float(metrics['loss'] / metrics['tokens'])
    first = per_token if first is None else first
    if per_token < 0.02:
      break
  assert first > 2.0  # starts near log(VOCAB) = 2.6
  assert per_token < 0.1, f'per-token loss {per_token} after {int(state.step)} steps'
  assert float(metrics['correct'] / metrics['tokens']) > 0.99


def test_train_step_is_pure_and_dropout_follows_the_step(random_params: Callable) -> None:
  model = _model(dropout=0.5, num_layers=2)  # dropout acts between GRU layers
  tx = steps.make_optimizer(learning_rate=0.01)
  batch = jax.tree.map(jnp.asarray, _reverse_batch(16, seed=3))
  # Any parameters do here: NumPy draws of the right shapes save compiling an init.
  params = random_params(model, batch['src'], batch['src_len'], batch['tgt_in'], scale=0.3)
  state = steps.TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params))
  step = _jit_step(model, tx)
  key = _key(4)
  new_a, metrics_a = step(state, batch, key)
  new_b, metrics_b = step(state, batch, key)
  leaves_a, leaves_b = jax.tree.leaves((new_a, metrics_a)), jax.tree.leaves((new_b, metrics_b))
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(new_a.step) == int(state.step) + 1
  # Same parameters, another step number: another dropout mask, so another loss.
  _, metrics_c = step(state.replace(step=state.step + 7), batch, key)
  assert float(metrics_c['loss']) != float(metrics_a['loss'])
  _, metrics_d = step(state, batch, _key(5))  # another key at the same step too
  assert float(metrics_d['loss']) != float(metrics_a['loss'])


@pytest.fixture(scope='module')
def sgd_step(tiny: Tiny) -> tuple:
  """One `train_step` with SGD(1) (the update is exactly -gradient), and the gradient of
  the mean token loss computed apart: (params, new state, metrics, gradient)."""
  tx = optax.sgd(1.0)
  params = tiny.params
  state = steps.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params))
  batch = _reverse_batch(8, seed=4)

  @jax.jit
  def run(state: steps.TrainState) -> tuple:
    new, metrics = steps.train_step(state, batch, _key(0), model=tiny.model, tx=tx)

    def mean_loss(p: Any) -> jax.Array:
      loss, m = steps.loss_terms(tiny.model, p, batch, train=False)
      return loss / m['tokens']

    return new, metrics, jax.grad(mean_loss)(state.params)

  return params, *run(state)


def test_train_step_gradient_is_of_the_mean_token_loss(sgd_step: tuple) -> None:
  params, new, metrics, grads = sgd_step
  assert int(new.step) == 1
  moved = jax.tree.map(lambda a, b: a - b, params, new.params)
  for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(moved), strict=True):
    np.testing.assert_allclose(d, g, atol=1e-6)
  np.testing.assert_allclose(metrics['grad_norm'], optax.tree.norm(grads), rtol=1e-5)


def test_gradient_clipping_bounds_the_update(sgd_step: tuple) -> None:
  params, _, _, grads = sgd_step
  lr = 0.01

  def moved(grad_clip: float) -> float:
    tx = steps.make_optimizer(learning_rate=lr, grad_clip=grad_clip)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return float(optax.tree.norm(updates))

  assert float(optax.tree.norm(grads)) > 1e-3
  # Unclipped (0 disables clipping), Adam's first step moves every parameter by ~lr.
  nonzero = sum(int((np.asarray(g) != 0).sum()) for g in jax.tree.leaves(grads))
  assert moved(0.0) == pytest.approx(lr * nonzero**0.5, rel=0.05)
  # Clipped to norm 1e-12, the gradient is far below Adam's epsilon (1e-8): hardly a move.
  assert moved(1e-12) < 1e-3 * lr


def test_make_optimizer_clips_the_global_norm() -> None:
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(1)}
  grads = {'a': jnp.array([3e-8, -4e-8]), 'b': jnp.array([12e-8])}  # global norm 1.3e-7
  sgd_like = lambda clip: steps.make_optimizer(learning_rate=1.0, grad_clip=clip)
  # With |g| << eps, Adam's first update is ~ -g / eps: proportional to the clipped gradient.
  free = sgd_like(0.0).update(grads, sgd_like(0.0).init(params), params)[0]
  clipped = sgd_like(1.3e-8).update(grads, sgd_like(1.3e-8).init(params), params)[0]
  ratio = jax.tree.map(lambda c, f: np.asarray(c) / np.asarray(f), clipped, free)
  # Clipping by 10x shrinks g tenfold: -(g/10)/(|g/10| + eps) vs -g/(|g| + eps).
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ratio), strict=True):
    g = np.abs(np.asarray(g))
    np.testing.assert_allclose(r, (g / 10 / (g / 10 + 1e-8)) / (g / (g + 1e-8)), rtol=1e-4)


def test_make_optimizer_schedules() -> None:
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.array([1.0, -2.0, 0.5])}

  def first_update(**kw: Any) -> np.ndarray:
    tx = steps.make_optimizer(learning_rate=0.1, **kw)
    return np.asarray(tx.update(grads, tx.init(params), params)[0]['w'])

  # Adam's first step is -lr * sign(g) (after clipping the norm to 1, the sign is kept).
  np.testing.assert_allclose(first_update(), [-0.1, 0.1, -0.1], rtol=1e-4)
  np.testing.assert_allclose(first_update(warmup_steps=10), 0.0, atol=1e-12)
  np.testing.assert_allclose(
    first_update(schedule='cosine', warmup_steps=10, total_steps=100), 0.0, atol=1e-12
  )
  np.testing.assert_allclose(
    first_update(schedule='rsqrt', warmup_steps=4), [-0.025, 0.025, -0.025], rtol=1e-4
  )
  np.testing.assert_allclose(
    first_update(weight_decay=0.1),
    [-0.11, 0.09, -0.11],
    rtol=1e-4,  # decoupled: lr * wd * p
  )


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(schedule='linear'), 'train.schedule'),
    (dict(schedule='Cosine'), 'train.schedule'),
    (dict(learning_rate=0.0), 'train.learning_rate'),
    (dict(learning_rate=-1e-3), 'train.learning_rate'),
  ],
)
def test_make_optimizer_rejects_bad_values(kwargs: dict, match: str) -> None:
  with pytest.raises(ValueError, match=match):
    steps.make_optimizer(**{'learning_rate': 1e-3, **kwargs})


def test_init_state_shapes_do_not_depend_on_batch_shape() -> None:
  model = _model()
  tx = steps.make_optimizer(learning_rate=1e-3)
  shapes = lambda bs: jax.eval_shape(
    lambda k: steps.init_state(model, tx, k, batch_shape=bs), _key(0)
  )
  a, b = shapes((2, 4)), shapes((3, 7))
  assert jax.tree.map(lambda x: x.shape, a) == jax.tree.map(lambda x: x.shape, b)
  assert a.step.shape == () and a.step.dtype == jnp.int32


def test_gradient_accumulation_equals_the_big_batch(tiny: Tiny) -> None:
  """K micro-batches of B/K rows give the update of one batch of B rows (no dropout):
  same parameters after two Adam steps with clipping, same metric sums. The rows' real
  token counts differ between micro-batches, so a per-micro-batch mean would not match."""
  tx = steps.make_optimizer(learning_rate=0.01, grad_clip=1.0)
  state = steps.TrainState(
    step=jnp.asarray(0, jnp.int32), params=tiny.params, opt_state=tx.init(tiny.params)
  )
  batch = jax.tree.map(jnp.asarray, _reverse_batch(24, seed=6))
  results = {}
  for k in (1, 4):
    s, step = state, _jit_step(tiny.model, tx, grad_accum_steps=k)
    for _ in range(2):
      s, metrics = step(s, batch, _key(0))
    results[k] = (s, metrics)
  (one, m1), (acc, m4) = results[1], results[4]
  assert int(acc.step) == 2
  # Adam divides by sqrt(v): for a gradient near 0 the float32 summation order (other
  # rows in other micro-batches) moves an update by up to ~1e-5 of the 1e-2 step.
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(acc.params), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=5e-5)
  for key in ('loss', 'correct', 'tokens', 'grad_norm'):
    np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5)
  moved = jax.tree.leaves(
    jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), one.params, state.params)
  )
  assert max(moved) > 1e-3  # the steps did move the parameters


def test_eval_step_in_slices_gives_the_whole_batch_sums(tiny: Tiny) -> None:
  """`eval_step` bounds its logits by slicing the batch's rows (the output layer and the
  loss a slice at a time): the slices are the fewest whose logits fit, the sums those of
  the whole batch (plain and tied attention decoders), and the compiled program's
  scratch memory shrinks with the bound."""
  per_row = WIDTH * VOCAB * 4  # float32 logits of one row
  assert steps.eval_slices(8, WIDTH, VOCAB, 8 * per_row) == 1
  assert steps.eval_slices(8, WIDTH, VOCAB, 3 * per_row) == 4  # 8 rows: 4 slices of 2
  assert steps.eval_slices(8, WIDTH, VOCAB, per_row - 1) == 8
  assert steps.eval_slices(256, 53, 8000) == 4  # the default eval batch at 8,000 pieces
  batch = _pad_batch(_reverse_batch(8, seed=2), cols=2, rows=0)
  attention = models.build_model(
    src_vocab_size=VOCAB,
    tgt_vocab_size=VOCAB,
    embed_size=32,
    num_hiddens=32,
    num_layers=1,
    decoder='attention',
    tie_embeddings=True,
  )
  for model, params in ((tiny.model, tiny.params), (attention, _init_params(attention, 1))):
    whole = steps.eval_step(params, batch, model=model)  # fits: one pass, as loss_terms
    sliced = jax.jit(
      functools.partial(steps.eval_step, model=model, logits_bytes=3 * (WIDTH + 2) * VOCAB * 4)
    )(params, batch)
    assert float(sliced['tokens']) == float(whole['tokens']) == batch['src_len'].sum()
    assert float(sliced['correct']) == float(whole['correct'])
    np.testing.assert_allclose(sliced['loss'], whole['loss'], rtol=1e-6)
  big = {k: jnp.zeros((64, 40), jnp.int32) for k in ('src', 'tgt_in', 'tgt_out')}
  big['src_len'] = jnp.full(64, 40, jnp.int32)
  wide = models.build_model(
    src_vocab_size=VOCAB, tgt_vocab_size=4000, embed_size=32, num_hiddens=32, num_layers=1
  )
  wide_params = _init_params(wide, 2)

  def scratch(logits_bytes: int) -> int:
    step = jax.jit(functools.partial(steps.eval_step, model=wide, logits_bytes=logits_bytes))
    return step.lower(wide_params, big).compile().memory_analysis().temp_size_in_bytes

  logits = 64 * 40 * 4000 * 4  # 41 MB of float32 logits for the whole batch
  whole = scratch(logits)  # 92 MB on XLA's CPU backend
  assert whole >= logits and scratch(logits // 8) < whole / 5  # 8 slices: 12 MB
