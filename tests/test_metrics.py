"""Tests for translation quality metrics: the book's BLEU and sacreBLEU's corpus scores."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from seq2seq_jax import scoring


@pytest.mark.parametrize('k', [1, 2, 4])
def test_bleu_identical_is_one(k: int) -> None:
  assert scoring.bleu('il est venu .', 'il est venu .', k) == pytest.approx(1.0)
  assert scoring.bleu('va !', 'va !', k) == pytest.approx(1.0)  # k past the length


def test_bleu_by_hand() -> None:
  # Same length: no brevity penalty. Unigrams il, est, . of 4 match: p1 = 3/4. Bigrams
  # 'il est', 'est venu', 'venu .' against 'il est', 'est calme', 'calme .': p2 = 1/3.
  # The n-th precision is weighted by 1/2^n.
  expected = (3 / 4) ** 0.5 * (1 / 3) ** 0.25
  assert scoring.bleu('il est venu .', 'il est calme .', 2) == pytest.approx(expected)
  # k = 1: the unigram precision alone.
  assert scoring.bleu('il est venu .', 'il est calme .', 1) == pytest.approx(0.75**0.5)


def test_bleu_brevity_penalty() -> None:
  # A shorter prediction: exp(1 - len_label / len_pred) = exp(1 - 4/2); precisions 1.
  assert scoring.bleu('il est', 'il est calme .', 2) == pytest.approx(math.exp(-1.0))
  # 3 of 4 tokens, all matching: exp(1 - 4/3), p1 = p2 = 1.
  assert scoring.bleu('il est calme', 'il est calme .', 2) == pytest.approx(math.exp(-1 / 3))
  # A longer prediction is not penalised for length: p1 = 4/5 (clipped), p2 = 3/4.
  expected = (4 / 5) ** 0.5 * (3 / 4) ** 0.25
  assert scoring.bleu('il est calme . .', 'il est calme .', 2) == pytest.approx(expected)


def test_bleu_clips_repeated_ngrams_and_handles_no_match() -> None:
  # 'le' matches once only: p1 = 1/3; 3 tokens against 2: no brevity penalty.
  assert scoring.bleu('le le le', 'le chat', 1) == pytest.approx((1 / 3) ** 0.5)
  assert scoring.bleu('un deux', 'trois quatre', 2) == 0.0
  assert scoring.bleu('', 'va !', 2) == 0.0


def test_bleu_book_examples() -> None:
  # The book's outputs and references, as its final table prints them.
  assert scoring.bleu('va !', 'va !', 2) == pytest.approx(1.0)
  # "i lost ." -> "j'ai perdu ." against itself, and a one-word miss.
  assert scoring.bleu("j'ai perdu .", "j'ai perdu .", 2) == pytest.approx(1.0)
  expected = (2 / 3) ** 0.5 * (0 / 2) ** 0.25
  assert scoring.bleu("j'ai gagné .", "j'ai perdu .", 2) == pytest.approx(expected)
  # "he's calm ." -> "il est mouillé ." vs "il est calme .": p1 = 3/4, p2 = 1/3.
  expected = (3 / 4) ** 0.5 * (1 / 3) ** 0.25
  assert scoring.bleu('il est mouillé .', 'il est calme .', 2) == pytest.approx(expected)


HYPS = ['le chat est sur le tapis .', 'il est calme .', 'je suis chez moi .', 'va !']
REFS = ['le chat est sur le tapis .', 'il est mouillé .', 'je suis à la maison .', 'va !']


def test_corpus_scores_match_sacrebleu_single_reference() -> None:
  scores = scoring.corpus_scores(HYPS, [[r] for r in REFS])
  assert scores['sentences'] == len(HYPS)
  assert scores['bleu'] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize='none').score)
  assert scores['chrf'] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
  assert 0.0 < scores['bleu'] < 100.0 and 0.0 < scores['chrf'] < 100.0
  perfect = scoring.corpus_scores(REFS, [[r] for r in REFS])
  assert perfect['bleu'] == pytest.approx(100.0) and perfect['chrf'] == pytest.approx(100.0)


def test_corpus_scores_tokenize_option() -> None:
  hyps, refs = ['il est calme.'], [['il est calme .']]
  assert scoring.corpus_scores(hyps, refs, tokenize='13a')['bleu'] == pytest.approx(100.0)
  assert scoring.corpus_scores(hyps, refs)['bleu'] < 100.0  # 'none': 'calme.' is one token
  assert scoring.corpus_scores(hyps, refs, tokenize='13a')['bleu'] == pytest.approx(
    sacrebleu.corpus_bleu(hyps, [['il est calme .']]).score
  )


def test_corpus_scores_varying_number_of_references() -> None:
  refs = [
    [REFS[0]],
    ['il est mouillé .', 'il est calme .', 'il est tranquille .'],
    ['je suis à la maison .', 'je suis chez moi .'],
    ['va !'],
  ]
  scores = scoring.corpus_scores(HYPS, refs)
  # Repeating a sentence's reference changes nothing in BLEU or chrF: fill the short
  # reference lists that way and ask sacreBLEU directly.
  width = max(len(r) for r in refs)
  streams = [[r[min(i, len(r) - 1)] for r in refs] for i in range(width)]
  assert scores['bleu'] == pytest.approx(
    sacrebleu.corpus_bleu(HYPS, streams, tokenize='none').score
  )
  assert scores['chrf'] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
  # Every hypothesis now matches one of its references exactly.
  assert scores['bleu'] == pytest.approx(100.0)
  single = scoring.corpus_scores(HYPS, [[r] for r in REFS])
  assert scores['bleu'] > single['bleu'] and scores['chrf'] > single['chrf']
  assert scores['sentences'] == 4


def test_corpus_scores_edge_cases() -> None:
  assert scoring.corpus_scores([], []) == {'bleu': 0.0, 'chrf': 0.0, 'sentences': 0}
  with pytest.raises(ValueError, match='2 hypotheses but 1 reference sets'):
    scoring.corpus_scores(['a', 'b'], [['a']])


def test_group_references_groups_in_first_seen_order() -> None:
  sources = ['Run!', 'Go.', 'Run!', 'Hi.', 'Go.', 'Run!']
  targets = ['Cours !', 'Va !', 'Courez !', 'Salut !', 'Bouge !', 'Fuyez !']
  groups = scoring.group_references(sources, targets)
  assert list(groups) == ['Run!', 'Go.', 'Hi.']
  assert groups == {
    'Run!': ['Cours !', 'Courez !', 'Fuyez !'],
    'Go.': ['Va !', 'Bouge !'],
    'Hi.': ['Salut !'],
  }
  assert scoring.group_references([], []) == {}
  with pytest.raises(ValueError):
    scoring.group_references(['a', 'b'], ['x'])


def test_score_forms_book_and_detokenised() -> None:
  hyps, refs = ['Il est là, je crois !'], [['il est là , je crois !']]
  book = scoring.form_for('word', 'fr')
  assert book is scoring.BOOK_FORM and book('Va!') == 'va !'
  assert scoring.score_translations(hyps, refs, book)['bleu'] == pytest.approx(100.0)
  detok = scoring.form_for('sentencepiece', 'fr')
  assert (detok.name, detok.tokenize) == ('detokenised', '13a')
  scores = scoring.score_translations(hyps, refs, detok, signatures=True)
  expected = sacrebleu.corpus_bleu(hyps, [['il est là , je crois !']])  # standard settings
  assert scores['bleu'] == pytest.approx(expected.score) and scores['bleu'] < 100
  assert 'case:mixed' in scores['bleu_signature'] and 'tok:13a' in scores['bleu_signature']
  assert scores['chrf_signature'].startswith('nrefs:1|case:mixed')
  assert scores['scored_on'] == 'detokenised'
  assert scoring.form_for('sentencepiece', 'zh').tokenize == 'zh'
  assert scoring.form_for('sentencepiece', 'jpn').tokenize == 'char'
  chars = scoring.score_translations(
    ['猫が好きです'], [['猫が好きです']], scoring.form_for('x', 'ja')
  )
  assert chars['bleu'] == pytest.approx(100.0)
