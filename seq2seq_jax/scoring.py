"""Translation quality: the book's sentence BLEU and sacreBLEU's corpus BLEU and chrF.

Corpus scores are computed on one of two forms (`form_for`, defined with the tokenizers in
`data/tokenizers.py`), and only numbers of the same form compare:
- the book's normal form (word tokens, the book's rules: lowercased, punctuation spaced;
  sacreBLEU with `tokenize='none'`), for the book's word-token configs;
- detokenised text (SentencePiece output, cased, as a person writes it) against the raw
  references, with sacreBLEU's standard settings (`13a`; `zh` for Chinese, characters for
  Japanese, Thai, Lao, Khmer and Burmese), as papers report.
The evaluate CLI prints sacreBLEU's signature beside each number.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import sacrebleu

# The forms are defined with the tokenizers whose output they describe.
from seq2seq_jax.data.tokenizers import BOOK_FORM, Form, form_for

__all__ = [
  'BOOK_FORM',
  'Form',
  'bleu',
  'corpus_scores',
  'form_for',
  'group_references',
  'score_translations',
]


def bleu(pred_seq: str, label_seq: str, k: int) -> float:
  """The book's BLEU: a brevity penalty times n-gram precisions (n <= k), the n-th
  weighted by 1/2^n. Tokens are split on spaces."""
  pred_tokens, label_tokens = pred_seq.split(' '), label_seq.split(' ')
  len_pred, len_label = len(pred_tokens), len(label_tokens)
  if not pred_seq:
    return 0.0
  score = math.exp(min(0.0, 1.0 - len_label / len_pred))
  for n in range(1, min(k, len_pred) + 1):
    num_matches, label_subs = 0, collections.defaultdict(int)
    for i in range(len_label - n + 1):
      label_subs[' '.join(label_tokens[i : i + n])] += 1
    for i in range(len_pred - n + 1):
      ngram = ' '.join(pred_tokens[i : i + n])
      if label_subs[ngram] > 0:
        num_matches += 1
        label_subs[ngram] -= 1
    score *= math.pow(num_matches / (len_pred - n + 1), math.pow(0.5, n))
  return score


def group_references(sources: Sequence[str], targets: Sequence[str]) -> dict[str, list[str]]:
  """Source -> all its reference translations, in first-seen order."""
  refs: dict[str, list[str]] = {}
  for src, tgt in zip(sources, targets, strict=True):
    refs.setdefault(src, []).append(tgt)
  return refs


def corpus_scores(
  hypotheses: Sequence[str],
  references: Sequence[Sequence[str]],
  tokenize: str = 'none',
  signatures: bool = False,
) -> dict[str, float]:
  """Corpus BLEU and chrF (sacreBLEU) with a varying number of references per sentence.

  `tokenize='none'` for the book's word output (already tokenized); '13a' for
  detokenized text. `signatures`: also sacreBLEU's signatures of both (strings).
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} reference sets')
  if not hypotheses:
    return {'bleu': 0.0, 'chrf': 0.0, 'sentences': 0}
  width = max(len(r) for r in references)
  streams = [[r[i] if i < len(r) else None for r in references] for i in range(width)]
  # `force`: the normal form is tokenized on purpose; no "forgot to detokenize" warning.
  bleu = sacrebleu.metrics.BLEU(tokenize=tokenize, force=tokenize == 'none')
  chrf = sacrebleu.metrics.CHRF()
  scores = {
    'bleu': bleu.corpus_score(hypotheses, streams).score,
    'chrf': chrf.corpus_score(hypotheses, streams).score,
    'sentences': len(hypotheses),
  }
  if signatures:
    scores['bleu_signature'] = str(bleu.get_signature())
    scores['chrf_signature'] = str(chrf.get_signature())
  return scores


def score_translations(
  hypotheses: Sequence[str],
  references: Sequence[Sequence[str]],
  form: Form,
  signatures: bool = False,
) -> dict:
  """`corpus_scores` of raw hypotheses and references put in `form`."""
  return corpus_scores(
    [form(h) for h in hypotheses],
    [[form(r) for r in refs] for refs in references],
    tokenize=form.tokenize,
    signatures=signatures,
  ) | ({'scored_on': form.name} if signatures else {})
