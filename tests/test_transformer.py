"""The Transformer family (`model.arch='transformer'`, models/transformer.py) behind the
decoding interface: one cached step equals teacher forcing; the translation tests of
test_translate.py (batching, beam against greedy with its n-best lists, ensembles) run
on a trained tiny Transformer as on the GRU; sampling and length limits; the attention
heads and their plots; averaging; the one-line errors of bad sizes and of a checkpoint
of one family loaded as the other. Populations, the parallel modes and kill -9 resume
are in test_population.py, test_pmap.py and test_train.py."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from seq2seq_jax import attention_plot, errors, inference, models
from seq2seq_jax.data import input_pipeline
from seq2seq_jax.models import transformer
from seq2seq_jax.train import averaging
from tests import conftest, fixtures_workdir, test_translate
from tests.test_translate import SENTENCES

VOCAB = 13


@pytest.fixture(scope='module')
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.trained_workdir(tmp_path_factory, 'transformer')


@pytest.fixture(scope='module')
def translator(workdir: Path) -> inference.Translator:
  return inference.load(workdir)


def tiny_model(**fields: object) -> models.EncoderDecoder:
  sizes = dict(num_hiddens=8, num_layers=2, num_heads=2, ffn_size=16, max_positions=16)
  return transformer.build_model(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, **{**sizes, **fields})


def source_batch() -> tuple[jax.Array, jax.Array]:
  """3 sources of 5, 3 and 1 tokens, padded to 5."""
  src_len = np.array([5, 3, 1], np.int32)
  ids = np.random.default_rng(1).integers(3, VOCAB, (3, 5))
  return jnp.asarray(np.where(np.arange(5) < src_len[:, None], ids, 0)), jnp.asarray(src_len)


@pytest.mark.parametrize(
  'fields', [{}, {'pre_norm': True, 'tie_embeddings': True}], ids=['post_norm', 'pre_norm_tied']
)
def test_a_cached_step_equals_teacher_forcing(fields: dict) -> None:
  """Feeding the target one token at a time through `init_decoder(max_steps=T)` and
  `decode_step` gives the teacher-forced logits at every position (float32)."""
  model = tiny_model(**fields)
  src, src_len = source_batch()
  tgt_in = jnp.asarray(np.random.default_rng(2).integers(1, VOCAB, (3, 6)), jnp.int32)
  params = conftest.draw_params(model, src, src_len, tgt_in)

  variables = {'params': params}
  forced = model.apply(variables, src, src_len, tgt_in)
  state = model.apply(variables, src, src_len, max_steps=6, method='init_decoder')
  steps = []
  for t in range(6):  # eagerly: cheaper than compiling, for these few steps
    logits, state = model.apply(variables, tgt_in[:, t], state, method='decode_step')
    steps.append(logits)
  cached = jnp.stack(steps, axis=1)
  assert forced.shape == (3, 6, VOCAB) and forced.dtype == jnp.float32
  np.testing.assert_allclose(cached, forced, rtol=1e-5, atol=1e-5)
  # Not trivially equal: the logits depend on the position and on the source.
  assert np.abs(np.diff(np.asarray(forced), axis=1)).max() > 1e-2
  assert np.abs(np.asarray(forced[0] - forced[1])).max() > 1e-2


def test_bad_sizes_are_one_line_errors_naming_the_fields() -> None:
  """num_heads not dividing num_hiddens (through the config's `model` group), a source
  longer than the positional table, an output length beyond it."""
  config = fixtures_workdir.use_transformer(tiny.get_config())
  config.model.num_heads = 3
  with pytest.raises(errors.ConfigError) as info:
    models.build(config.model, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
  message = str(info.value)
  assert 'model.num_heads=3' in message and 'model.num_hiddens=16' in message
  assert '\n' not in message
  model = tiny_model(max_positions=4)
  src = jnp.ones((2, 6), jnp.int32)
  src_len = jnp.array([6, 2], jnp.int32)
  params = conftest.draw_params(model, src[:, :4], src_len, src[:, :4])
  variables = {'params': params}
  with pytest.raises(errors.ConfigError, match=r'source of 6 tokens .*model\.max_positions=4'):
    jax.eval_shape(lambda: model.apply(variables, src, src_len, src[:, :4]))
  init_decoder = functools.partial(model.apply, variables, method='init_decoder')
  with pytest.raises(errors.ConfigError, match=r'output of 5 tokens .*model\.max_positions=4'):
    jax.eval_shape(lambda: init_decoder(src[:, :4], src_len, max_steps=5))
  # At the limit both work.
  state = jax.eval_shape(lambda: init_decoder(src[:, :4], src_len, max_steps=4))
  assert state['cache'][0][0].shape == (2, 4, 8)


def test_a_translation_does_not_depend_on_its_batch(translator) -> None:  # noqa: ANN001
  """test_translate.py's test on the Transformer, in batches of at most 8 (one compiled
  shape a search): the same sentence, the same output alone, in batches of other sizes
  and company, in any order (greedy and beam 3)."""
  pool = [
    f'{s} {v} {o}.'
    for s in ('I', 'You', 'He', 'We')
    for v in ('see', 'like')
    for o in ('the cat', 'a book', 'the car')
  ]
  rng = random.Random(0)
  for beam_size in (1, 3):
    t = dataclasses.replace(translator, beam_size=beam_size, batch_size=8)
    alone = {s: t.translate([s])[0] for s in pool[:6]}
    for size in (5, 8, 13):  # 5 rows padded to 8, 8 rows, two batches (8 + 5)
      batch = rng.sample(pool, size)
      for s, out in zip(batch, t.translate(batch), strict=True):
        if s in alone:
          assert out == alone[s], (beam_size, size, s)
    assert t.translate(pool[:6]) == t.translate(pool[:6][::-1])[::-1]


def test_beam_never_scores_below_greedy_and_lists_are_complete(translator) -> None:  # noqa: ANN001
  test_translate.test_beam_never_scores_below_greedy_and_lists_are_complete(translator)


def test_an_ensemble_translates_as_the_model(workdir: Path, translator, tmp_path: Path) -> None:  # noqa: ANN001
  test_translate.test_an_ensemble_loads_from_several_workdirs_and_checks_their_vocabularies(
    workdir, translator, tmp_path
  )


def test_sampling_and_length_limits(translator) -> None:  # noqa: ANN001
  """Sampling: the same seed, the same samples whatever the batch; another seed, others;
  --max_len_ratio bounds every output."""
  sampler = dataclasses.replace(
    translator, sample=True, seed=3, top_k=4, temperature=1.5, max_len_ratio=0.6
  )
  lines = sampler.translate(SENTENCES)
  assert all(lines)
  assert dataclasses.replace(sampler, batch_size=1).translate(SENTENCES) == lines
  assert dataclasses.replace(sampler, seed=4).translate(SENTENCES * 2) != lines * 2
  for s, out in zip(SENTENCES, lines, strict=True):
    assert len(out.split()) <= math.ceil(0.6 * len(translator.encode([s])[0]))


def test_attention_heads_average_to_the_attention(translator, tmp_path: Path) -> None:  # noqa: ANN001
  """attention_weights(heads=True): [batch, heads, out, src], its mean over heads the
  heads=False weights; each row sums to 1 over the real source tokens, padding gets 0.
  Plotter(heads=True) writes a PNG a sentence (none for a blank one)."""
  t = translator
  sentences = ['I see the cat.', 'We have a book!', 'He sees.']
  src, src_len = input_pipeline.make_source_batch(t.encode(sentences), t.max_len)
  ids = jnp.asarray(np.stack(t.translate_ids(t.encode(sentences))))
  heads = np.asarray(attention_plot.attention_weights(t.model, t.params, src, src_len, ids, True))
  mean = np.asarray(attention_plot.attention_weights(t.model, t.params, src, src_len, ids))
  assert heads.shape == (3, 2, ids.shape[1], src.shape[1]) and src.shape[1] > min(src_len)
  np.testing.assert_allclose(heads.mean(axis=1), mean, rtol=1e-5, atol=1e-6)
  real = np.arange(src.shape[1]) < np.asarray(src_len)[:, None]  # [batch, src]
  np.testing.assert_allclose(heads.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.where(real[:, None, None, :], 0.0, heads) == 0.0)
  assert np.abs(heads[:, 0] - heads[:, 1]).max() > 1e-3  # the heads differ
  plots = tmp_path / 'plots'
  out = attention_plot.Plotter(t, plots, heads=True)([sentences[0], '', sentences[1]])
  assert out == [t.translate([sentences[0]])[0], '', t.translate([sentences[1]])[0]]
  assert sorted(p.name for p in plots.iterdir()) == ['attention_001.png', 'attention_003.png']
  assert all(p.read_bytes().startswith(b'\x89PNG') for p in plots.iterdir())


def test_averaged_checkpoint_is_the_mean_and_translates(workdir: Path, tmp_path: Path) -> None:
  copy = tmp_path / 'w'
  shutil.copytree(workdir, copy)
  done = averaging.average_checkpoints(copy, last=2)
  steps = done['averaged_steps']
  assert len(steps) == 2 and done['step'] == steps[-1]
  ends = [inference.load(copy, checkpoint=str(s)).params for s in steps]
  averaged = inference.load(copy, checkpoint='averaged')
  for got, a, b in zip(*(jax.tree.leaves(p) for p in (averaged.params, *ends)), strict=True):
    np.testing.assert_allclose(got, (np.float64(a) + np.float64(b)) / 2, rtol=1e-6)
  assert all(averaged.translate(SENTENCES))


def test_a_checkpoint_of_one_family_does_not_load_as_the_other(
  workdir: Path, tmp_path: Path
) -> None:
  """The Transformer's workdir with model.arch='rnn' in its config.json: loading it fails
  with one line naming arch (resuming a GRU's as a Transformer: test_train.py)."""
  copy = tmp_path / 'w'
  shutil.copytree(workdir, copy)
  config = json.loads((copy / 'config.json').read_text())
  config['model']['arch'] = 'rnn'
  (copy / 'config.json').write_text(json.dumps(config))
  with pytest.raises(errors.UserError) as info:
    inference.load(copy)
  assert "arch: checkpoint 'transformer' vs config 'rnn'" in str(info.value)
  assert 'arch' in str(info.value) and '\n' not in str(info.value)
