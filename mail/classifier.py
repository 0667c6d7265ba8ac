"""Which kind a free-form letter asks for, and in which language to answer: a trained model.

The model is character n-gram TF-IDF with a multinomial logistic regression,
trained by scikit-learn (``python -m mail.training``) from the labelled
letters in ``mail/letters/train_*.jsonl`` and saved as plain arrays in
``mail/letters/model.npz``. Character n-grams cope with Kazakh suffixes,
typos and mixed language; every text is also read a second time folded to
one rough Latin spelling, so Kazakh written in Cyrillic, in the Latin
alphabet of 2021, or typed without its own letters share their features.

Applying the model needs only numpy: the same n-grams, the same weights, a
dot product and a softmax, so the desk starts without importing
scikit-learn (about a second) and loads the model in a few milliseconds. A
test checks that this reproduces scikit-learn's probabilities and that the
saved model was trained from the letters now in the repository.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

LETTERS = "letters"
MODEL_FILE = "model.npz"
# Letters longer than this are classified by their beginning (the request is up front).
MAX_CHARS = 3000
# A subject longer than this is not a subject people write; its rest would drown the words.
MAX_SUBJECT = 200

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[^\w\s]+")

# One rough Latin spelling for Kazakh in Cyrillic (with or without its own letters), in the
# 2021 Latin alphabet and in chat-style ASCII, and for Russian: letters that people swap for
# one another when their keyboard lacks one become the same letter.
_FOLD = str.maketrans(
    {
        "а": "a", "ә": "a", "ä": "a", "б": "b", "в": "v", "г": "g", "ғ": "g", "ğ": "g",
        "д": "d", "е": "e", "ё": "e", "э": "e", "ж": "j", "з": "z", "и": "i", "й": "i",
        "і": "i", "ı": "i", "к": "k", "қ": "k", "q": "k", "л": "l", "м": "m", "н": "n",
        "ң": "n", "ñ": "n", "о": "o", "ө": "o", "ö": "o", "п": "p", "р": "r", "с": "s",
        "т": "t", "у": "u", "ұ": "u", "ү": "u", "ū": "u", "ü": "u", "w": "u", "ф": "f",
        "х": "h", "һ": "h", "x": "h", "ц": "ts", "ч": "ch", "ç": "ch", "ш": "sh", "щ": "sh",
        "ş": "sh", "ъ": "", "ь": "", "ы": "y", "ю": "yu", "я": "ya",
    }
)  # fmt: skip
_DIGRAPHS = re.compile(r"zh|kh")
# Words whose features are remembered (most words of letters recur): about 20 MB at most.
_WORD_CACHE = 100_000


def fold(text: str) -> str:
    """``text`` in one rough Latin spelling (see ``_FOLD``); expects lower case."""
    folded = text.translate(_FOLD)
    return _DIGRAPHS.sub(lambda m: "j" if m.group(0) == "zh" else "h", folded)


def prepare(subject: str, body: str) -> str:
    """The text the model reads: subject and own words, cleaned, then the same folded."""
    text = f"{subject[:MAX_SUBJECT]}\n{body}"[:MAX_CHARS]
    text = unicodedata.normalize("NFC", text).lower().replace("ё", "е")
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = _DIGITS.sub("0", text)
    text = _NOT_WORD.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return f"{text} {fold(text)}" if text else ""


def char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """The n-grams scikit-learn's ``analyzer="char_wb"`` makes of ``text``, in its order."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(low, high + 1):
            offset = 0
            grams.append(padded[offset : offset + n])
            while offset + n < length:
                offset += 1
                grams.append(padded[offset : offset + n])
            if offset == 0:  # a word shorter than n counts once
                break
    return grams


def training_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the training files' names and bytes: which letters a model learnt from."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def letters_folder() -> Path:
    """The folder of the labelled letters and the saved model (inside the package)."""
    return Path(str(resources.files("mail").joinpath(LETTERS)))


def training_files(folder: Path | None = None) -> list[Path]:
    return sorted((folder or letters_folder()).glob("train_*.jsonl"))


@dataclass(frozen=True)
class Guess:
    """What the model makes of one letter."""

    kind: str | None  # None: not sure enough, see ``candidates``
    candidates: tuple[str, ...]  # the likely kinds, most likely first
    confidence: float  # the probability of the most likely kind
    language: str | None  # kk, ru or en; None when there were no words to read


@dataclass(frozen=True)
class _Head:
    """One linear layer over the shared features: a class's weight per feature."""

    classes: tuple[str, ...]
    coef: NDArray[np.float32]  # (features, classes)
    intercept: NDArray[np.float32]

    def proba(self, indexes: NDArray[np.intp], weights: NDArray[np.float64]) -> NDArray[np.float64]:
        scores = weights @ self.coef[indexes].astype(np.float64) + self.intercept
        scores = scores - scores.max()
        exp = np.exp(scores)
        result: NDArray[np.float64] = exp / exp.sum()
        return result


class KindClassifier:
    """The saved model applied with numpy; see the module docstring."""

    def __init__(
        self,
        vocabulary: dict[str, int],
        idf: NDArray[np.float32],
        kinds: _Head,
        languages: _Head,
        meta: dict[str, Any],
    ) -> None:
        self._vocabulary = vocabulary
        self._idf = idf.astype(np.float64)
        self._kinds = kinds
        self._languages = languages
        self.meta = meta
        low, high = meta["ngram_range"]
        self._range = (int(low), int(high))
        self._words: dict[str, tuple[int, ...]] = {}
        self.threshold = float(meta["threshold"])
        self.coverage = float(meta["coverage"])

    @classmethod
    def load(cls, path: Path | None = None) -> KindClassifier:
        """Read a model saved by :func:`mail.training.save` (the packaged one by default)."""
        path = path or letters_folder() / MODEL_FILE
        with np.load(path, allow_pickle=False) as data:
            vocabulary = {str(gram): index for index, gram in enumerate(data["vocabulary"])}
            kinds = _Head(
                tuple(str(c) for c in data["kind_classes"]),
                data["kind_coef"],
                data["kind_intercept"],
            )
            languages = _Head(
                tuple(str(c) for c in data["language_classes"]),
                data["language_coef"],
                data["language_intercept"],
            )
            meta = json.loads(str(data["meta"]))
            return cls(vocabulary, data["idf"], kinds, languages, meta)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._kinds.classes

    def _word(self, word: str) -> tuple[int, ...]:
        """The features of one word's n-grams (char_wb n-grams never cross a space)."""
        found = self._words.get(word)
        if found is None:
            low, high = self._range
            vocabulary = self._vocabulary
            found = tuple(
                index
                for gram in char_wb_ngrams(word, low, high)
                if (index := vocabulary.get(gram)) is not None
            )
            if len(self._words) < _WORD_CACHE:
                self._words[word] = found
        return found

    def features(self, text: str) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """The prepared text's TF-IDF: feature indexes and their l2-normalised weights."""
        counts: Counter[int] = Counter()
        for word in text.split():
            counts.update(self._word(word))
        if not counts:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        indexes = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        weights = (1.0 + np.log(tf)) * self._idf[indexes]
        norm = math.sqrt(float(weights @ weights))
        return indexes, weights / norm if norm else weights

    def probabilities(self, text: str) -> dict[str, float]:
        """Each kind's probability for an already prepared text (see :func:`prepare`)."""
        indexes, weights = self.features(text)
        proba = self._kinds.proba(indexes, weights)
        return dict(zip(self._kinds.classes, (float(p) for p in proba), strict=True))

    def guess(self, subject: str, body: str) -> Guess:
        """The kind when the model is sure, else the likely kinds; and the language."""
        text = prepare(subject, body)
        indexes, weights = self.features(text)
        if not len(indexes):
            return Guess(None, self.kinds, 0.0, None)
        proba = self._kinds.proba(indexes, weights)
        order = np.argsort(-proba)
        best = float(proba[order[0]])
        likely: list[str] = []
        covered = 0.0
        for index in order:
            likely.append(self._kinds.classes[int(index)])
            covered += float(proba[index])
            if covered >= self.coverage or len(likely) >= 4:
                break
        kind = likely[0] if best >= self.threshold else None
        language_proba = self._languages.proba(indexes, weights)
        language = self._languages.classes[int(np.argmax(language_proba))]
        return Guess(kind, tuple(likely), best, language)

    def guess_many(self, letters: Sequence[tuple[str, str]]) -> list[Guess]:
        return [self.guess(subject, body) for subject, body in letters]


_loaded: KindClassifier | None = None


def default_classifier() -> KindClassifier:
    """The packaged model, loaded once per process."""
    global _loaded
    if _loaded is None:
        _loaded = KindClassifier.load()
    return _loaded
