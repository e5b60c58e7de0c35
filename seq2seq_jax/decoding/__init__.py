"""Decoding: searches over any model that offers the decoding interface.

`interface.py` (the contract: `DecodingModel`, `Decodable`), `greedy_search.py` (greedy
decoding and sampling), `beam_search.py`, `ensemble.py` (several models as one).
"""
