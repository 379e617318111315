"""Tokenization shared by the in-process BM25 backends (bm25s and rank_bm25).

Both backends see exactly the same tokens: text is tokenized once by bm25s's
`Tokenizer` into ids, and rank_bm25 receives those ids decoded back to strings.
Lucene analyses text itself (see `personarag.retrievers.lucene`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError

if TYPE_CHECKING:
    from bm25s.tokenization import Tokenizer

Stopwords = str | Sequence[str] | None

#: bm25s's named stopword lists; a list of words is accepted as well.
STOPWORD_LANGUAGES = (
    "en", "english", "en_plus", "english_plus", "de", "german", "nl", "dutch", "fr", "french", "es", "spanish",
    "pt", "portuguese", "it", "italian", "ru", "russian", "sv", "swedish", "no", "norwegian", "zh", "chinese",
    "tr", "turkish", "ko", "korean", "da", "danish",
)  # fmt: skip


def check_stopwords(stopwords: Any) -> Stopwords:
    """Validate the `stopwords` option: a language name bm25s knows, a list of words, or None."""
    if stopwords is None:
        return None
    if isinstance(stopwords, str):
        if stopwords not in STOPWORD_LANGUAGES:
            raise InputError(
                f"stopwords={stopwords!r} is not a known list; give None, a list of words, "
                f"or one of: {', '.join(STOPWORD_LANGUAGES)}"
            )
        return stopwords
    if isinstance(stopwords, Sequence) and all(isinstance(word, str) for word in stopwords):
        return list(stopwords)
    raise InputError(f"stopwords must be None, a language name or a list of strings, got {stopwords!r}")


def make_stemmer(name: str | None) -> Any:
    """A PyStemmer stemmer by algorithm name ("english" is Snowball Porter2, "porter" the original Porter)."""
    if name is None:
        return None
    import Stemmer  # PyStemmer is a core dependency

    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise InputError(
            f"stemmer={name!r} is not a PyStemmer algorithm; give None or one of: {', '.join(Stemmer.algorithms())}"
        ) from None


def make_tokenizer(*, lowercase: bool, stopwords: Stopwords, stemmer: str | None) -> Tokenizer:
    import bm25s.tokenization

    return bm25s.tokenization.Tokenizer(
        lower=lowercase, stopwords=stopwords if stopwords is not None else [], stemmer=make_stemmer(stemmer)
    )


def tokenize_corpus(tokenizer: Tokenizer, texts: Sequence[str], *, show_progress: bool = False) -> list[list[int]]:
    """Token ids of each text, growing the tokenizer's vocabulary. A text with no tokens becomes [id of ""]."""
    return tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids", show_progress=show_progress)


def tokenize_queries(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each query in the corpus vocabulary; unknown terms are dropped (possibly leaving [])."""
    ids = tokenizer.tokenize(list(texts), update_vocab=False, return_as="ids", show_progress=False, allow_empty=False)
    return [list(query) for query in ids]


def decode(tokenizer: Tokenizer, ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Token ids back to their (stemmed) strings, the form rank_bm25 indexes."""
    reverse = {token_id: token for token, token_id in tokenizer.get_vocab_dict().items()}
    return [[reverse[token_id] for token_id in doc] for doc in ids]


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    tokenizer.save_vocab(directory)
    tokenizer.save_stopwords(directory)


def load_tokenizer(directory: Path, *, lowercase: bool, stopwords: Stopwords, stemmer: str | None) -> Tokenizer:
    tokenizer = make_tokenizer(lowercase=lowercase, stopwords=stopwords, stemmer=stemmer)
    tokenizer.load_vocab(directory)
    tokenizer.load_stopwords(directory)
    return tokenizer
