"""WebShop's product search: BM25 over each product's ``contents`` with an English stemming analyzer.

WebShop indexes one document per product with pyserini (Lucene): the ``contents`` field is the
title, the description, the first bullet point and ``"<option name>: <values>, and ..."``, lower
case (``search_engine/convert_product_file_format.py``), analysed by Anserini's default English
analyzer (standard tokenizer, possessive ``'s`` removed, lower case, Lucene's 33 English stop
words, Porter stemmer) and searched with BM25 (k1 = 0.9, b = 0.4), at most 50 hits. This module
does the same with ``bm25s`` and PyStemmer's Porter stemmer, so ``dress`` and ``dresses`` find the
same products and option words are found. Known differences: the tokenizer is a regular
expression close to Lucene's standard tokenizer, and Lucene stores document lengths in a lossy
one-byte encoding, so scores (rarely ranks) differ slightly.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer

SEARCH_RETURN_N = 50  # WebShop's engine returns at most 50 products per query
BM25_K1, BM25_B = 0.9, 0.4  # pyserini's LuceneSearcher defaults
# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET.
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_TOKEN = re.compile(r"\w+(?:[.'’]\w+)*")
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("porter")


def analyze(text: str) -> list[str]:
    """Lucene-style analysis: ``"Men's Dresses, X-Large"`` -> ``["men", "dress", "x", "larg"]``."""
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if token.endswith(("'s", "’s")):
            token = token[:-2]
        if token and token not in LUCENE_STOPWORDS:
            tokens.append(token)
    # Porter reduces a lone "s" to "": drop empty stems (they would match nothing anyway).
    return [stem for stem in _stemmer().stemWords(tokens) if stem] if tokens else []


class SearchIndex:
    """BM25 over analysed documents; ``search`` returns document indices, best first.

    Args:
        documents: one text per document (a product's ``contents``).
    """

    def __init__(self, documents: Sequence[str]):
        self._bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
        self._bm25.index([analyze(doc) or [""] for doc in documents], show_progress=False)
        self._num_tokens = len(self._bm25.scores["indptr"]) - 1
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> tuple[int, ...]:
        """The ``k`` best documents with a score above 0; ties in document order (as Lucene's docids)."""
        key = f"{k}\t{query}"
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        vocabulary = self._bm25.vocab_dict
        # bm25s keeps a placeholder token in its vocabulary that has no score column: skip it.
        token_ids = [
            vocabulary[w] for w in analyze(query) if vocabulary.get(w, self._num_tokens) < self._num_tokens
        ]
        result: tuple[int, ...] = ()
        if token_ids:
            scores = self._bm25.get_scores_from_ids(token_ids)
            top = np.flatnonzero(scores > 0)  # in document order
            top = top[np.argsort(-scores[top], kind="stable")][:k]
            result = tuple(int(i) for i in top)
        self._cache[key] = result
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        """Forgets cached results (for benchmarks; results never change)."""
        self._cache.clear()
