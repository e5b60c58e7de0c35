"""The data pipeline: from a data config to tokenizers and NumPy batches.

Its modules import one way, each only from those listed before it:

1. `text`: the book's normalisation, word tokens, vocabulary; `clean` (plain spaces) and
   `is_blank` (the blank-line rule).
2. `manythings`: finding and parsing a manythings (Tatoeba) file, language codes.
3. `heldout`: validation and test carved from training pairs by source sentence.
4. `textfiles`: files read line by line, split names with slices, chunks, file digests.
5. `tatoeba`, `filesources`, `tfds_source`: the kinds of data source (a Tatoeba file via
   TFDS, parallel text and TSV files, a TFDS dataset by name).
6. `sources`: the `Source` interface, the registry of kinds and `from_config`.
7. `tokenizers`: word and SentencePiece tokenizers, their settings, 'auto' resolved, the
   form translations are scored on.
8. `encoding`: sentences to padded id arrays; length settings.
9. `batching`: length buckets and the resumable `Batcher`.
10. `splitfiles`: prepared folders written atomically, splits saved and memory-mapped.
11. `prepared`: tokenizers and encoded splits made once per source and settings.
12. `input_pipeline`: the entry point (`prepare(config.data, workdir)`), which reads the
    data config once.

Only optional heavy libraries are imported inside functions (TFDS, SentencePiece).
"""
