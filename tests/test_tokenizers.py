"""Tokenizers by config: word (the book's) and SentencePiece, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq_jax.data import text, tokenizers
from tests import synthetic


@pytest.fixture(scope='module')
def pairs() -> list[tuple[str, str]]:
  return synthetic.make_pairs(300)


def test_sentencepiece_round_trip_is_cased_and_detokenised(pairs, tmp_path: Path) -> None:
  src, tgt = tokenizers.train('sentencepiece', pairs, vocab_size=60)
  ids = tgt.encode('Je vois le chat!')
  assert ids[-1] == text.EOS_ID and text.PAD_ID not in ids and text.BOS_ID not in ids
  assert tgt.decode(ids + [5, 6]) == 'Je vois le chat!'  # stops at <eos>
  assert tgt.decode([text.BOS_ID] + ids) == 'Je vois le chat!'
  assert tgt.reference('Je vois le chat!') == 'je vois le chat !'
  for path, tok in zip(tokenizers.paths(tmp_path, 'sentencepiece'), (src, tgt), strict=True):
    tok.save(path)
  src2, tgt2 = tokenizers.load(tmp_path, 'sentencepiece')
  assert src2.encode('We like the dog.') == src.encode('We like the dog.')
  assert tgt2.vocab_size == tgt.vocab_size


def test_word_tokenizers_by_kind(pairs, tmp_path: Path) -> None:
  src, tgt = tokenizers.train('word', pairs, min_freq=2)
  assert src.decode(src.encode('I see the cat.')) == 'i see the cat .'
  for path, tok in zip(tokenizers.paths(tmp_path, 'word'), (src, tgt), strict=True):
    tok.save(path)
  src2, _ = tokenizers.load(tmp_path, 'word')
  assert src2.vocab.idx_to_token == src.vocab.idx_to_token


def test_unknown_kind_and_missing_files_are_clear(tmp_path: Path) -> None:
  with pytest.raises(ValueError, match='data.tokenizer must be one of'):
    tokenizers.paths(tmp_path, 'bpe')
  with pytest.raises(FileNotFoundError, match='no sentencepiece tokenizer'):
    tokenizers.load(tmp_path, 'sentencepiece')


def test_normal_form_puts_both_tokenizers_on_one_scale() -> None:
  assert text.normal_form('Je suis  chez moi.') == 'je suis chez moi .'
  assert text.normal_form('je suis chez moi .') == 'je suis chez moi .'


def test_sentencepiece_on_a_language_without_spaces() -> None:
  subjects, verbs, objects = (
    ['我', '你', '他', '她'],
    ['喜欢', '看见', '想要'],
    ['猫', '狗', '书', '苹果'],
  )
  sentences = [f'{s}{v}{o}。' for s in subjects for v in verbs for o in objects] * 3
  pairs = [(f'sentence {i}', zh) for i, zh in enumerate(sentences)]
  _, zh = tokenizers.train('sentencepiece', pairs, vocab_size=40)
  for sentence in sentences[:12]:
    ids = zh.encode(sentence)
    assert ids[-1] == text.EOS_ID and len(ids) > 2  # pieces, not one token per sentence
    assert zh.decode(ids) == sentence  # no spaces put in
  assert zh.encode_batch(sentences[:5]) == [zh.encode(s) for s in sentences[:5]]


def test_auto_is_word_tokens_for_the_books_corpus_only() -> None:
  from configs import d2l, default

  data = default.get_config().data
  assert data.tokenizer == 'auto' and d2l.get_config().data.tokenizer == 'word'
  assert tokenizers.resolve_kind(data) == 'word'  # the Tatoeba file, English to French
  data.src_lang, data.tgt_lang = 'fra', 'en'
  assert tokenizers.resolve_kind(data) == 'word'  # either direction
  data.src_lang = 'de'
  assert tokenizers.resolve_kind(data) == 'sentencepiece'  # another Tatoeba pair
  data.src_lang, data.train_prefix = 'fr', 'corpus/train'
  assert tokenizers.resolve_kind(data) == 'sentencepiece'  # any other source
  data.tokenizer = 'word'
  assert tokenizers.resolve_kind(data) == 'word'
  data.tokenizer = 'bpe'
  with pytest.raises(ValueError, match="data.tokenizer must be 'auto' or one of"):
    tokenizers.resolve_kind(data)
