"""The offline tutor: a scripted helper that streams answers with no network.

This is **not a language model**. It holds a small knowledge base written for
this course (``tutor_kb.json``), picks the entry that best matches the
question by TF-IDF cosine similarity (stdlib only), and streams that entry's
answer in sub-word pieces at a configurable pace, so a classroom without an
API key still sees a reply arrive token by token. When nothing matches well it
says so honestly. Questions in Korean (the seed document's audience) are
answered in Korean, anything else in English.

The same question, seed and conversation always give the same pieces.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from .base import ChatMessage

__all__ = ["OfflineTutor", "KnowledgeBase", "Answer", "detect_language"]

_LATIN = re.compile(r"[a-z0-9][a-z0-9_]*")
_HANGUL = re.compile(r"[\uac00-\ud7a3]+")
_STOP = frozenset(
    "a an the is are was were be to of in on and or for with how does do what why when "
    "which who it its this that can i you me my we us please tell about explain".split()
)
_FOLLOW_UP = re.compile(r"\b(more|why|again|example|detail|details|else)\b|더|자세히|왜|예시|다시")
_PIECE = re.compile(r"\s*\S+|\s+")


def detect_language(text: str) -> str:
    """``"ko"`` when at least 30 % of the letters are Hangul syllables, else ``"en"``."""
    hangul = sum(len(m) for m in _HANGUL.findall(text))
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    return "ko" if hangul and hangul >= 0.3 * (hangul + latin) else "en"


def tokenize(text: str) -> list[str]:
    """Lower-case Latin words (minus stop words) and Hangul words plus their bigrams."""
    text = text.lower()
    terms = [w for w in _LATIN.findall(text.replace("-", " ")) if w not in _STOP]
    for word in _HANGUL.findall(text):
        terms.append(word)
        terms.extend(word[i : i + 2] for i in range(len(word) - 1))
    return terms


@dataclass(frozen=True)
class Answer:
    """The tutor's choice: the entry id (``None`` for no answer), score and text."""

    entry: str | None
    score: float
    language: str
    text: str


class KnowledgeBase:
    """The tutor's entries with a TF-IDF index over keywords and answers."""

    def __init__(self, data: dict) -> None:
        self.fallback: dict[str, str] = data["fallback"]
        self.entries: list[dict] = data["entries"]
        docs: list[Counter] = []
        for entry in self.entries:
            keywords = tokenize(entry["keywords_en"] + " " + entry["keywords_ko"])
            body = tokenize(entry["en"] + " " + entry["ko"])
            doc = Counter(body)
            for term in keywords:
                doc[term] += 3  # keywords weigh more than the prose
            docs.append(doc)
        n = len(docs)
        df = Counter(term for doc in docs for term in doc)
        self.idf = {term: math.log((1 + n) / (1 + count)) + 1 for term, count in df.items()}
        self.vectors = [self._weigh(doc) for doc in docs]

    @classmethod
    def load(cls) -> KnowledgeBase:
        """The knowledge base shipped in the package."""
        text = resources.files("chatkit.llm").joinpath("tutor_kb.json").read_text("utf-8")
        return cls(json.loads(text))

    def _weigh(self, counts: Counter) -> dict[str, float]:
        vec = {t: (1 + math.log(c)) * self.idf.get(t, 0.0) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items() if v}

    def rank(self, question: str) -> list[tuple[float, int]]:
        """(score, entry index) for every entry, best first; ties by entry order."""
        query = self._weigh(Counter(tokenize(question)))
        scores = [
            (sum(w * vec.get(t, 0.0) for t, w in query.items()), i) for i, vec in enumerate(self.vectors)
        ]
        return sorted(scores, key=lambda s: (-s[0], s[1]))


class OfflineTutor:
    """Stream knowledge-base answers at a human-like pace (see the module docstring).

    ``first_token_ms`` and ``tokens_per_s`` set the pace (``0`` = as fast as
    possible); ``sleep`` may be replaced by a fake clock in tests.
    """

    name = "offline"

    def __init__(
        self,
        *,
        first_token_ms: float = 300.0,
        tokens_per_s: float = 30.0,
        seed: int = 0,
        threshold: float = 0.12,
        knowledge: KnowledgeBase | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.first_token_s = max(0.0, first_token_ms) / 1000
        self.token_interval_s = 1 / tokens_per_s if tokens_per_s > 0 else 0.0
        self.seed = seed
        self.threshold = threshold
        self.kb = knowledge or KnowledgeBase.load()
        self.sleep = sleep

    def answer(self, messages: list[ChatMessage]) -> Answer:
        """Choose the answer to the last user message, using earlier ones for follow-ups."""
        users = [m["content"] for m in messages if m.get("role") == "user"]
        question = users[-1] if users else ""
        language = detect_language(question)
        given = {m["content"] for m in messages if m.get("role") == "assistant"}
        ranked = self.kb.rank(question)
        if (not ranked or ranked[0][0] < self.threshold) and _FOLLOW_UP.search(question.lower()):
            # "tell me more": rank on the recent conversation, skip answers already given.
            ranked = self.kb.rank(" ".join(users[-3:]))
            ranked = [
                (s, i)
                for s, i in ranked
                if self.kb.entries[i]["en"] not in given and self.kb.entries[i]["ko"] not in given
            ]
        if not ranked or ranked[0][0] < self.threshold:
            return Answer(None, ranked[0][0] if ranked else 0.0, language, self.kb.fallback[language])
        score, index = ranked[0]
        entry = self.kb.entries[index]
        return Answer(entry["id"], score, language, entry[language])

    def pieces(self, text: str, key: str = "") -> list[str]:
        """Split ``text`` into token-like pieces: short words whole, long ones in 2–5 chars."""
        rng = random.Random(self.seed ^ zlib.crc32(key.encode("utf-8")))
        out: list[str] = []
        for word in _PIECE.findall(text):
            i = 0
            while i < len(word):
                size = rng.randint(2, 5) if len(word) - i > 5 else len(word) - i
                out.append(word[i : i + size])
                i += size
        return out

    async def stream(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        answer = self.answer(messages)
        key = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
        await self.sleep(self.first_token_s)
        for n, piece in enumerate(self.pieces(answer.text, key)):
            if n:
                await self.sleep(self.token_interval_s)
            yield piece
