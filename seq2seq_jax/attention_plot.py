"""Attention weights of translations, and heatmaps of them as the book shows.

The decoders with attention sow their weights into the 'intermediates' collection
(`attention` [batch, out, src]: the Bahdanau decoder's, or the Transformer's last-block
cross-attention averaged over heads; the Transformer also sows `attention_heads` [batch,
heads, out, src]); they are collected only when that collection is made mutable, so
training never pays for them. Here a translation (greedy or beam) is fed back through the
model by teacher forcing, which repeats the decoding steps exactly and returns the
weights of every output token over the source tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import errors, inference, models
from seq2seq_jax.data import input_pipeline, text

Array = jax.Array


class NoAttentionError(errors.UserError):
  """The model has no attention weights to show (the plain decoder)."""


def attention_weights(
  model: models.EncoderDecoder,
  params: Any,
  src: Array,
  src_len: Array,
  ids: Array,
  heads: bool = False,
) -> Array:
  """The attention of each output step over the source: [batch, out time, src time]
  (with `heads`: [batch, heads, out time, src time]).

  src: [batch, src time]; src_len: [batch]; ids: [batch, out time] the output tokens
  (as the decoders return them). Padding source positions get weight 0."""
  bos = jnp.full((ids.shape[0], 1), text.BOS_ID, ids.dtype)
  tgt_in = jnp.concatenate([bos, ids[:, :-1]], axis=1)
  _, variables = model.apply({'params': params}, src, src_len, tgt_in, mutable=['intermediates'])
  sown = variables.get('intermediates', {}).get('decoder', {})
  name = 'attention_heads' if heads else 'attention'
  if name not in sown:
    raise NoAttentionError(
      'this model has no attention heads (--attention_heads needs model.arch=transformer)'
      if heads and 'attention' in sown
      else 'this model has no attention (its decoder is not the attention one)'
    )
  return sown[name][0]


def check_supported(translator: inference.Translator) -> None:
  """Raises a one-line error unless the translator's model has attention to show."""
  if translator.ensemble_size > 1:
    raise NoAttentionError(
      f'attention plots show one model; this is an ensemble of {translator.ensemble_size} '
      '(give one --workdir)'
    )
  if not translator.has_attention:
    described = ''
    if translator.config is not None:
      model_cfg = translator.config.model
      fields = [f'model.{k}={model_cfg[k]!r}' for k in ('arch', 'decoder') if k in model_cfg]
      described = ' (' + ', '.join(fields) + ')'
    raise NoAttentionError(
      "attention plots need a model with attention: model.decoder='attention' or "
      f"model.arch='transformer'; this model has none{described}"
    )


@functools.cache
def _compiled(model: models.EncoderDecoder, heads: bool) -> Any:
  return jax.jit(functools.partial(attention_weights, model, heads=heads))


@dataclasses.dataclass
class AttentionMap:
  """One translation with its attention: weights [output tokens, source tokens] (per
  head: [heads, output tokens, source tokens])."""

  translation: str
  src_tokens: list[str]
  out_tokens: list[str]
  weights: np.ndarray


def attention_maps(
  translator: inference.Translator,
  sentences: Sequence[str],
  warn: bool = True,
  heads: bool = False,
) -> list[AttentionMap | None]:
  """Translates the sentences (greedy or beam search, as the translator does) and returns
  each one's attention map (with `heads`, one per head); None for an empty sentence."""
  check_supported(translator)
  keep = inference.nonblank(sentences)
  all_ids = translator.encode(sentences, warn=warn)  # warnings name the input line
  src_ids = [all_ids[i] for i in keep]
  outs = translator.translate_ids(src_ids)
  fn = _compiled(translator.model, heads)
  result: list[AttentionMap | None] = [None] * len(sentences)
  for i, ids, out in zip(keep, src_ids, outs, strict=True):
    src, src_len = input_pipeline.make_source_batch([ids], translator.max_len)
    weights = np.asarray(fn(translator.params, src, src_len, jnp.asarray(out)[None]))[0]
    src_tokens = translator.source_tokens(sentences[i])
    out_tokens = translator.output_tokens(out)
    result[i] = AttentionMap(
      translator.tgt_tok.decode(out),
      src_tokens,
      out_tokens,
      weights[..., : len(out_tokens), : len(src_tokens)],
    )
  return result


def plot_heatmap(
  src_tokens: Sequence[str], out_tokens: Sequence[str], weights: np.ndarray, path: str | Path
) -> Path:
  """Writes a heatmap PNG: source tokens across, output tokens down, as the book; weights
  [out, src], or [heads, out, src] for one panel per head side by side."""
  import matplotlib

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt

  panels = weights if weights.ndim == 3 else weights[None]
  count, rows, cols = panels.shape
  width, height = 1.0 + 0.5 * max(cols, 4), 1.0 + 0.4 * max(rows, 3)
  fig, axes = plt.subplots(1, count, figsize=(width * count + 1.0, height), squeeze=False)
  for i, ax in enumerate(axes[0]):
    image = ax.imshow(panels[i], cmap='Reds', vmin=0.0, vmax=1.0, aspect='auto')
    ax.set_xticks(range(cols), list(src_tokens), rotation=60, ha='right')
    ax.set_yticks(range(rows), list(out_tokens) if i == 0 else [])
    ax.set_xlabel('source tokens (keys)')
    if count > 1:
      ax.set_title(f'head {i + 1}')
  axes[0][0].set_ylabel('output tokens (queries)')
  fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  return path


class Plotter:
  """Writes one heatmap per translated sentence into a directory, numbered in input
  order (`attention_001.png`, ...; an empty sentence gets no file but a number); with
  `heads`, a panel per attention head (the Transformer's last-block cross-attention)."""

  def __init__(self, translator: inference.Translator, directory: str | Path, heads: bool = False):
    check_supported(translator)
    self.translator = translator
    self.directory = Path(directory)
    self.heads = heads
    self.count = 0

  def __call__(self, sentences: Sequence[str]) -> list[str]:
    """Translates the sentences, writes their plots; returns the translations."""
    translations, written = [], 0
    for entry in attention_maps(self.translator, sentences, heads=self.heads):
      self.count += 1
      if entry is None:
        translations.append('')
        continue
      path = self.directory / f'attention_{self.count:03d}.png'
      plot_heatmap(entry.src_tokens, entry.out_tokens, entry.weights, path)
      translations.append(entry.translation)
      written += 1
    if written == 1:
      print(f'attention plot: {path}', file=sys.stderr)
    elif written:
      print(f'attention plots: {written} written to {self.directory}', file=sys.stderr)
    return translations
