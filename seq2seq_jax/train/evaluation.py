"""Validation during training: loss and accuracy sums over the validation batches, greedy
corpus BLEU and chrF, and the book's examples printed at the end. One model or a
population's members (metrics with a trailing `[members]` axis) alike."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from seq2seq_jax import scoring
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


def translate_ids(
  greedy_fn: Any, params: Any, src_ids: list[list[int]], width: int, batch_size: int
) -> list[np.ndarray]:
  """Greedy translations of id sequences, in batches of a fixed shape (one compile)."""
  outputs = []
  for start in range(0, len(src_ids), batch_size):
    chunk = src_ids[start : start + batch_size]
    src, src_len = input_pipeline.make_source_batch(
      chunk + [[0]] * (batch_size - len(chunk)), width
    )
    out = np.asarray(greedy_fn(params, src, src_len))
    outputs.extend(out[: len(chunk)])
  return outputs


def evaluate_bleu(
  greedy_fn: Any,
  params: Any,
  data: input_pipeline.Data,
  *,
  max_sentences: int,
  batch_size: int,
  num_samples: int,
) -> tuple[dict[str, float], list[dict]]:
  """Corpus BLEU and chrF of greedy translations of (a fixed prefix of) the validation
  pairs, with all references of a repeated source together. Sources are encoded,
  translated and decoded a batch at a time: only the hypotheses' text is kept."""
  refs = scoring.group_references(data.val.sources, data.val.targets)
  sources = list(refs)[:max_sentences] if max_sentences else list(refs)
  hyps = []
  for start in range(0, len(sources), batch_size):
    src_ids = [data.src_tok.encode(s)[: data.max_len] for s in sources[start : start + batch_size]]
    outs = translate_ids(greedy_fn, params, src_ids, data.max_len, batch_size)
    hyps += [data.tgt_tok.decode(o) for o in outs]
  references = [refs[s] for s in sources]
  scores = scoring.score_translations(hyps, references, data.score_form)
  samples = [
    {'source': s, 'reference': r[0], 'hypothesis': h}
    for s, r, h in list(zip(sources, references, hyps, strict=False))[:num_samples]
  ]
  return scores, samples


def print_examples(
  config: ml_collections.ConfigDict, data: input_pipeline.Data, greedy_fn: Any, params: Any
) -> None:
  """The config's examples (the book's four), one per line:
  `<source> => <translation>, bleu <score>`."""
  if not config.examples:
    return
  sources = [e for e, _ in config.examples]
  outs = translate_ids(
    greedy_fn, params, [data.src_tok.encode(e) for e in sources], data.max_len, len(sources)
  )
  for (eng, fra), out in zip(config.examples, outs, strict=True):
    hyp = data.tgt_tok.decode(out)
    score = scoring.bleu(hyp, data.tgt_tok.reference(fra), k=2)
    print(f'{eng} => {hyp}, bleu {score:.3f}', flush=True)
