"""Validation during training: loss and accuracy sums over the validation batches, greedy
corpus BLEU and chrF (decoded by `inference.Translator`, as `translate` and `evaluate`
decode), and the book's examples printed at the end. One model or a population's members
(metrics with a trailing `[members]` axis) alike."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from seq2seq_jax import inference, scoring
from seq2seq_jax.data import input_pipeline
from seq2seq_jax.train import distributed
from seq2seq_jax.train.reporting import per_member


def evaluate_loss(
  eval_fn: Any,
  params: Any,
  batcher: input_pipeline.Batcher,
  devices: distributed.Devices,
  size: int = 1,
) -> list[dict[str, float]]:
  """Validation loss and token accuracy per member (one entry for a single model)."""
  sums: dict[str, np.ndarray] = {}
  for batch in batcher.one_pass():
    for k, v in jax.device_get(eval_fn(params, devices.shard(batch))).items():
      sums[k] = sums.get(k, 0.0) + per_member(v, size)
  tokens = np.maximum(sums['tokens'], 1.0)
  return [
    {
      'val_loss': float(sums['loss'][i] / tokens[i]),
      'val_accuracy': float(sums['correct'][i] / tokens[i]),
    }
    for i in range(size)
  ]


def translate(
  translator: inference.Translator,
  params: Any,
  sources: list[str],
  batch_size: int | None = None,
) -> list[str]:
  """Greedy translations of `sources` with `params` (unreplicated: one device decodes),
  by the path `translate` and `evaluate` take; lines longer than the model reads are
  trimmed silently. `batch_size`: sentences decoded together (default the translator's)."""
  changes = {} if batch_size is None else {'batch_size': batch_size}
  return translator.with_params(params, **changes).translate(sources, warn=False)


def evaluate_bleu(
  translator: inference.Translator,
  params: Any,
  data: input_pipeline.Data,
  *,
  max_sentences: int,
  num_samples: int,
  batch_size: int | None = None,
) -> tuple[dict[str, float], list[dict]]:
  """Corpus BLEU and chrF of greedy translations of (a fixed prefix of) the validation
  pairs, with all references of a repeated source together: the scores `evaluate` gives
  the same parameters on these pairs."""
  refs = scoring.group_references(data.val.sources, data.val.targets)
  sources = list(refs)[:max_sentences] if max_sentences else list(refs)
  hyps = translate(translator, params, sources, batch_size)
  references = [refs[s] for s in sources]
  scores = scoring.score_translations(hyps, references, data.score_form)
  samples = [
    {'source': s, 'reference': r[0], 'hypothesis': h}
    for s, r, h in list(zip(sources, references, hyps, strict=False))[:num_samples]
  ]
  return scores, samples


def print_examples(
  config: ml_collections.ConfigDict,
  data: input_pipeline.Data,
  translator: inference.Translator,
  params: Any,
) -> None:
  """The config's examples (the book's four), one per line:
  `<source> => <translation>, bleu <score>`."""
  if not config.examples:
    return
  hyps = translate(translator, params, [e for e, _ in config.examples])
  for (eng, fra), hyp in zip(config.examples, hyps, strict=True):
    score = scoring.bleu(hyp, data.tgt_tok.reference(fra), k=2)
    print(f'{eng} => {hyp}, bleu {score:.3f}', flush=True)
