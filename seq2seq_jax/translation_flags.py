"""The flags `translate` and `evaluate` share (which workdirs and checkpoint, how to
decode) and the translator they describe."""

from __future__ import annotations

from typing import Any

from absl import flags

from seq2seq_jax import inference


def define(batch_size: int) -> None:
  """The flags `translate` and `evaluate` share: which workdirs and checkpoint, and how
  to decode."""
  flags.DEFINE_string(
    'workdir', None, "A workdir written by train.py (a population's: all its members)."
  )
  flags.DEFINE_list(
    'ensemble', [], 'More workdirs, comma-separated: decode with the mean of all log-probs.'
  )
  flags.DEFINE_string(
    'checkpoint',
    'auto',
    "'auto' (the averaged checkpoint a run wrote at its end, else the best), 'best', "
    "'latest', 'averaged' (seq2seq_jax.average) or a step number.",
  )
  flags.DEFINE_integer('batch_size', batch_size, 'Sentences translated together.', lower_bound=1)
  flags.DEFINE_integer('beam_size', 1, 'Beam size; 1 is greedy decoding.', lower_bound=1)
  flags.DEFINE_float('alpha', 0.75, 'Length normalisation of beam search: logP / len**alpha.')
  flags.DEFINE_integer(
    'max_len', 0, "Longest output in tokens, <eos> included (0: the model's).", lower_bound=0
  )
  flags.DEFINE_float(
    'max_len_ratio',
    0.0,
    'Also stop outputs at ceil(R * source tokens) (0: no limit).',
    lower_bound=0,
  )
  flags.DEFINE_bool('sample', False, 'Draw each translation from the model instead.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling: divide the logits by this.')
  flags.DEFINE_integer(
    'top_k', 0, 'Sampling: only from the K likeliest tokens (0: all).', lower_bound=0
  )
  flags.DEFINE_integer('seed', 0, 'Sampling: the seed (with the line number, the key).')
  flags.mark_flag_as_required('workdir')


def load(flag_values: Any) -> inference.Translator:
  """`inference.load` with the flags of `define`."""
  f = flag_values
  return inference.load(
    [f.workdir, *f.ensemble],
    f.checkpoint,
    f.batch_size,
    beam_size=f.beam_size,
    alpha=f.alpha,
    max_output_len=f.max_len,
    max_len_ratio=f.max_len_ratio,
    sample=f.sample,
    temperature=f.temperature,
    top_k=f.top_k,
    seed=f.seed,
  )
