"""Tokenization shared by the in-process BM25 backends (bm25s and rank_bm25).

Both backends see exactly the same tokens: text is tokenized once by bm25s's
`Tokenizer` into ids, and rank_bm25 receives those ids decoded back to strings.
Lucene analyses text itself (see `personarag.retrievers.lucene`).

Two ways to split text into words (`splitter`):
- "bm25s": bm25s's default, runs of two or more word characters;
- "lucene": Lucene's StandardTokenizer (Unicode word boundaries, UAX #29: "U.S.A", "3.14",
  "1,000" and "isn't" stay whole, hyphens split, single letters and digits are words) followed
  by its EnglishPossessiveFilter (a trailing 's goes). With `stopwords="en"` (Lucene's 33
  English stopwords, the same list as bm25s's "en") and `stemmer="lucene_porter"` this is
  Lucene's EnglishAnalyzer, the analyzer of Pyserini's BEIR baselines.

`stemmer="lucene_porter"` is Porter as Lucene's PorterStemFilter has it: Martin Porter's own
implementation, which departs from the 1980 paper that Snowball's "porter" follows in three
places (words of one or two letters are kept; -logi becomes -log; -bli becomes -ble, not only
-abli). We run PyStemmer's "porter" and apply those departures to its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError, require

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
    """A stemmer by name: a PyStemmer algorithm ("english" is Snowball Porter2, "porter" the
    original Porter) or "lucene_porter" (Porter as Lucene's PorterStemFilter has it)."""
    if name is None:
        return None
    import Stemmer  # PyStemmer is a core dependency

    if name == LUCENE_PORTER:
        return LucenePorterStemmer()
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise InputError(
            f"stemmer={name!r} is not a known stemmer; give None, {LUCENE_PORTER!r} or a PyStemmer algorithm: "
            f"{', '.join(Stemmer.algorithms())}"
        ) from None


def check_splitter(splitter: Any) -> str:
    if splitter not in SPLITTERS:
        raise InputError(f"splitter must be one of {', '.join(map(repr, SPLITTERS))}, got {splitter!r}")
    return splitter


def make_tokenizer(*, lowercase: bool, stopwords: Stopwords, stemmer: str | None, splitter: str = "bm25s") -> Tokenizer:
    import bm25s.tokenization

    options: dict[str, Any] = {"lower": lowercase}
    if check_splitter(splitter) == "lucene":  # lowercases each word itself, as Lucene does
        options = {"lower": False, "splitter": lucene_words_lower if lowercase else lucene_words}
    return bm25s.tokenization.Tokenizer(
        stopwords=stopwords if stopwords is not None else [], stemmer=make_stemmer(stemmer), **options
    )


# -- Lucene's English analysis ----------------------------------------------------------------

SPLITTERS = ("bm25s", "lucene")
LUCENE_PORTER = "lucene_porter"
#: StandardTokenizer's default maxTokenLength: longer words are cut into pieces of this length.
MAX_TOKEN_LENGTH = 255
_APOSTROPHES = ("'", "\u2019", "\uff07")
_POSSESSIVES = tuple(a + s for a in _APOSTROPHES for s in "sS")
_word_break: Any = None
_is_word: Any = None


def lucene_words(text: str) -> list[str]:
    """`text` split as Lucene's StandardTokenizer + EnglishPossessiveFilter do (no lowercasing).

    Word boundaries are Unicode's (UAX #29, the `regex` module's WORD flag, as in Lucene's
    JFlex grammar); a piece between two boundaries is a token when it holds a letter, a decimal
    digit or a pictographic symbol (Lucene's <EMOJI>: "®", "©"), so "²" and "-" are not.
    """
    global _word_break, _is_word
    if _word_break is None:
        regex = require("regex", "bm25", purpose="splitter='lucene' (Unicode word boundaries)")
        _word_break = regex.compile(r"\b", flags=regex.WORD | regex.V1).split
        _is_word = regex.compile(r"[\p{L}\p{Nd}\p{Extended_Pictographic}]").search
    words = []
    for piece in _word_break(text):
        if not _is_word(piece):
            continue
        if piece.endswith(_POSSESSIVES):
            piece = piece[:-2]
        if len(piece) > MAX_TOKEN_LENGTH:
            words.extend(piece[i : i + MAX_TOKEN_LENGTH] for i in range(0, len(piece), MAX_TOKEN_LENGTH))
        elif piece:
            words.append(piece)
    return words


def lucene_words_lower(text: str) -> list[str]:
    """`lucene_words`, lowercased as Lucene's LowerCaseFilter does (Java's one-to-one lowercase:
    "İ" becomes "i", not Python's "i̇", and a final "Σ" becomes "σ", not "ς")."""
    return lucene_words(text.translate(_JAVA_LOWER).lower())


_JAVA_LOWER = {0x130: "i", 0x3A3: "\u03c3"}


class LucenePorterStemmer:
    """Porter as in Lucene's PorterStemmer (Martin Porter's C version): Snowball's original
    Porter (PyStemmer "porter"), then the C version's three departures from the paper."""

    def __init__(self) -> None:
        import Stemmer

        self._porter = Stemmer.Stemmer("porter").stemWord

    def stemWord(self, word: str) -> str:  # noqa: N802 - PyStemmer's name, which bm25s looks for
        if len(word) <= 2:
            return word
        stem = self._porter(word)
        # Snowball keeps step 1's -logi and -Cbli (C not "a"); the C version's step 2 rewrites them.
        if stem.endswith("logi") and _measure(stem[:-4]) > 0:
            return stem[:-1]
        if stem.endswith("bli") and not stem.endswith("abli") and _measure(stem[:-3]) > 0:
            return _porter_steps_4_5(stem[:-1] + "e")
        return stem

    def stemWords(self, words: Sequence[str]) -> list[str]:  # noqa: N802
        return [self.stemWord(word) for word in words]


def _vowels(word: str) -> list[bool]:
    """Porter's vowels: a e i o u, and y after a consonant."""
    flags: list[bool] = []
    for i, char in enumerate(word):
        flags.append(char in "aeiou" or (char == "y" and i > 0 and not flags[i - 1]))
    return flags


def _measure(word: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in `word`."""
    flags = _vowels(word)
    return sum(1 for here, after in zip(flags, flags[1:]) if here and not after)


def _cvc(word: str) -> bool:
    """Consonant-vowel-consonant at the end, the last not w, x or y."""
    flags = _vowels(word)
    return len(word) >= 3 and not flags[-3] and flags[-2] and not flags[-1] and word[-1] not in "wxy"


def _porter_steps_4_5(word: str) -> str:
    """The rest of the C version on a word that step 2 just turned into -ble (step 3 has no -ble rule)."""
    if word.endswith(("able", "ible")) and _measure(word[:-4]) > 1:
        word = word[:-4]
    if word.endswith("e"):
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word


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


def load_tokenizer(directory: Path, tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` (made with the saved options) given the vocabulary and stopwords saved in `directory`."""
    tokenizer.load_vocab(directory)
    tokenizer.load_stopwords(directory)
    return tokenizer
