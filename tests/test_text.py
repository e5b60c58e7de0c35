"""Tests for the book's text processing: `preprocess`, `tokenize`, `Vocab`, `WordTokenizer`."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq_jax.data import text


@pytest.mark.parametrize(
  'raw, expected',
  [
    ('Go.', 'go .'),
    ('Hi, you!', 'hi , you !'),
    ('Who?', 'who ?'),
    ('Cours\u202f!', 'cours !'),  # narrow no-break space before '!' (French typography)
    ('Ça alors\xa0!', 'ça alors !'),  # no-break space
    ('Va !', 'va !'),  # a space already precedes: no second one
    ('I won!', 'i won !'),
    ('Wait... what?', 'wait . . . what ?'),
    ('.Go', '.go'),  # the first character never gets a space before it
    ('', ''),
  ],
)
def test_preprocess_book_cases(raw: str, expected: str) -> None:
  assert text.preprocess(raw) == expected


def test_preprocess_never_doubles_spaces() -> None:
  for raw in ['Go .', 'Va\u202f!', 'Salut\xa0!', 'Hi , you !']:
    assert '  ' not in text.preprocess(raw), raw


def test_tokenize_appends_eos() -> None:
  assert text.tokenize('go .') == ['go', '.', text.EOS]
  assert text.tokenize('hi , you !') == ['hi', ',', 'you', '!', '<eos>']
  assert text.tokenize('') == ['<eos>']
  assert text.tokenize('a  b') == ['a', 'b', '<eos>']  # empty tokens are dropped


def test_reserved_ids() -> None:
  assert text.RESERVED == ('<pad>', '<bos>', '<eos>', '<unk>')
  assert (text.PAD_ID, text.BOS_ID, text.EOS_ID, text.UNK_ID) == (0, 1, 2, 3)


def _sentences() -> list[list[str]]:
  return [
    ['b', 'a', 'c', '<eos>'],
    ['a', 'd', '<eos>'],
    ['b', 'e', 'e', '<eos>'],
    ['z', '<eos>'],
  ]


def test_vocab_build_min_freq() -> None:
  vocab = text.Vocab.build(_sentences(), min_freq=2)
  # a: 2, b: 2, e: 2 (twice in one sentence counts), c, d, z: 1; <eos> is reserved.
  assert vocab.idx_to_token == ['<pad>', '<bos>', '<eos>', '<unk>', 'a', 'b', 'e']
  assert len(vocab) == 7
  assert [vocab.token_to_idx[t] for t in text.RESERVED] == [0, 1, 2, 3]


def test_vocab_build_min_freq_one_keeps_all_sorted() -> None:
  vocab = text.Vocab.build(_sentences(), min_freq=1)
  assert vocab.idx_to_token[4:] == ['a', 'b', 'c', 'd', 'e', 'z']
  assert vocab.idx_to_token[:4] == list(text.RESERVED)


def test_vocab_encode_unknown_and_decode() -> None:
  vocab = text.Vocab.build(_sentences(), min_freq=2)
  assert vocab.encode(['a', 'q', 'e', '<eos>']) == [4, text.UNK_ID, 6, text.EOS_ID]
  # Padding and <bos> are dropped; decoding stops at the first <eos>.
  assert vocab.decode([1, 4, 0, 5, 2, 6, 6]) == ['a', 'b']
  assert vocab.decode([4, 2, 5], stop_at_eos=False) == ['a', '<eos>', 'b']
  assert vocab.decode([3]) == ['<unk>']


def test_vocab_rejects_bad_token_lists() -> None:
  with pytest.raises(ValueError, match='must start with'):
    text.Vocab(['a', '<pad>', '<bos>', '<eos>', '<unk>'])
  with pytest.raises(ValueError, match='once'):
    text.Vocab([*text.RESERVED, 'a', 'a'])


def test_vocab_save_load_round_trip(tmp_path: Path) -> None:
  vocab = text.Vocab.build([['été', 'ça', 'été', 'ça', 'x']], min_freq=2)
  path = tmp_path / 'vocab.json'
  vocab.save(path)
  loaded = text.Vocab.load(path)
  assert loaded.idx_to_token == vocab.idx_to_token == [*text.RESERVED, 'ça', 'été']
  assert loaded.token_to_idx == vocab.token_to_idx
  assert 'été' in path.read_text(encoding='utf-8')  # stored as UTF-8, not escaped


def test_tokenizer_train_counts_only_first_num_steps_tokens() -> None:
  # 'late' is the 4th token of both sentences: seen twice in full, never within 3 steps.
  sentences = ['one two three late.', 'one two four late.']
  full = text.WordTokenizer.train(sentences, min_freq=2)
  trimmed = text.WordTokenizer.train(sentences, min_freq=2, num_steps=3)
  assert full.vocab.idx_to_token[4:] == ['.', 'late', 'one', 'two']
  assert trimmed.vocab.idx_to_token[4:] == ['one', 'two']
  assert trimmed.vocab_size == 6


def test_tokenizer_encode_decode_round_trip() -> None:
  sentences = ['Go.', 'Go now!', 'Hi, you!', 'Hi now.', 'You go!', 'You, hi?']
  tok = text.WordTokenizer.train(sentences, min_freq=1)
  for sentence in sentences:
    ids = tok.encode(sentence)
    assert ids[-1] == text.EOS_ID
    assert text.UNK_ID not in ids
    assert tok.decode(ids) == text.preprocess(sentence)
    assert tok.decode(ids) == tok.reference(sentence)
  ids = tok.encode('Go now!')
  assert tok.decode([*ids, *tok.encode('Hi, you!')]) == 'go now !'  # stops at <eos>
  assert tok.decode([text.BOS_ID, *ids, 0, 0]) == 'go now !'
  assert tok.encode('Go away!') == [*tok.encode('Go')[:-1], text.UNK_ID, *tok.encode('!')]


def test_tokenizer_save_load(tmp_path: Path) -> None:
  tok = text.WordTokenizer.train(['a b.', 'a c.', 'b.'], min_freq=2)
  tok.save(tmp_path / 'v.json')
  loaded = text.WordTokenizer.load(tmp_path / 'v.json')
  assert loaded.kind == 'word'
  assert loaded.vocab.idx_to_token == tok.vocab.idx_to_token
  assert loaded.encode('a b c.') == tok.encode('a b c.') == [5, 6, 3, 4, 2]


@pytest.mark.parametrize(
  'raw, expected',
  [
    ('Va\u202f!', 'va !'),
    ('  Ça   alors\xa0! ', 'ça alors !'),
    ('Hi, you!', 'hi , you !'),
    ('', ''),
  ],
)
def test_reference_normalises_spaces(raw: str, expected: str) -> None:
  tok = text.WordTokenizer(text.Vocab(list(text.RESERVED)))
  assert tok.reference(raw) == expected


def test_detokenize() -> None:
  assert text.detokenize(['va', '!']) == 'va !'
  assert text.detokenize([]) == ''


def test_clean_makes_non_breaking_spaces_plain_and_nothing_else() -> None:
  assert text.clean('Cours\u202f! Ça alors\xa0!') == 'Cours ! Ça alors !'
  assert text.clean(' Keep\tCase  and\ttabs ') == ' Keep\tCase  and\ttabs '


def test_is_blank_is_white_space_only() -> None:
  assert all(text.is_blank(s) for s in ('', ' ', '\t \r\n', '\u3000'))
  assert not any(text.is_blank(s) for s in ('.', ' a ', '\xa0!'))
