"""Varied English sentences for label-free distillation, generated from templates.

`sentences(n, seed)` combines subjects, verbs, objects and endings from several topics (food,
finance, sport, health, travel, weather, technology, home, school, nature) into n distinct
sentences. They are for training only: the evaluation sentences (scripts/data/sentences.txt)
are written by hand and none of them is generated here.
"""

from __future__ import annotations

import random

SUBJECTS = (
    "The old fisherman", "A young engineer", "My neighbour", "The city council", "Our football team", "The small bakery",
    "A retired teacher", "The hospital staff", "Two tourists", "The marketing department", "My little brother",
    "The local library", "A famous chef", "The science class", "The farmer down the road", "A group of hikers",
    "The orchestra", "The new manager", "Her cousin", "The airline", "The museum guide", "A curious cat",
    "The software company", "The weather service", "His grandfather", "The night nurse", "The bus driver",
    "Several students", "The mayor", "A street musician",
)
VERBS = (
    "repaired", "painted", "discussed", "ordered", "cancelled", "visited", "recommended", "borrowed", "cleaned",
    "photographed", "planned", "delivered", "tested", "described", "celebrated", "forgot", "sold", "studied",
    "built", "measured", "ignored", "translated", "returned", "inspected", "carried",
)
OBJECTS = (
    "a wooden boat", "the quarterly budget", "three loaves of bread", "the broken heater", "a concert ticket",
    "the mountain trail", "an old bicycle", "the annual report", "a birthday cake", "the garden fence",
    "a new vaccine", "the train timetable", "a pile of letters", "the science project", "the kitchen sink",
    "a rare stamp", "the evening news", "a pair of boots", "the solar panels", "the harbour wall",
    "a chess set", "the exam results", "the flower beds", "a cup of tea", "the city map",
)
ENDINGS = (
    "before the storm arrived", "on a rainy Tuesday", "after the meeting ended", "near the railway station",
    "during the summer holidays", "without telling anyone", "in less than an hour", "for the third time this year",
    "at the end of the month", "while the children slept", "in front of a large crowd", "early in the morning",
    "despite the high cost", "with great care", "because the deadline was close", "at the edge of the forest",
    "under a clear blue sky", "as the sun went down", "on the top floor", "across the river",
)
QUESTIONS = (
    "Why did {s} {v} {o} {e}?", "Has {s} really {v} {o} {e}?", "{s} {v} {o} {e}.", "{s} never {v} {o} {e}.",
    "Yesterday {s_low} {v} {o} {e}.", "{s} {v} {o}, and everyone noticed.", "It seems {s_low} {v} {o} {e}.",
)


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        s = rng.choice(SUBJECTS)
        text = rng.choice(QUESTIONS).format(s=s, s_low=s[0].lower() + s[1:], v=rng.choice(VERBS), o=rng.choice(OBJECTS),
                                            e=rng.choice(ENDINGS))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


STDLIB = ("argparse", "asyncio", "calendar", "collections", "configparser", "contextlib", "csv", "datetime", "decimal",
          "difflib", "email", "fractions", "functools", "gzip", "heapq", "html", "http.client", "imaplib", "inspect",
          "itertools", "json", "logging", "mailbox", "math", "multiprocessing", "os", "pathlib", "pickle", "pydoc",
          "queue", "random", "shutil", "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "subprocess",
          "tarfile", "tempfile", "textwrap", "threading", "time", "traceback", "typing", "unittest", "urllib.request",
          "uuid", "warnings", "zipfile")


def _docstrings(module) -> list[str]:
    import inspect

    docs = [module.__doc__ or ""]
    for _, obj in inspect.getmembers(module):
        docs.append(getattr(obj, "__doc__", None) or "")
        if inspect.isclass(obj):
            docs += [getattr(f, "__doc__", None) or "" for _, f in inspect.getmembers(obj)]
    return [d for d in docs if isinstance(d, str)]


def prose(n: int, seed: int = 0) -> list[str]:
    """Up to n sentences of real English prose: the docstrings of Python's standard library
    (6 to 30 words, starting with a capital, ending with a full stop, almost only letters)."""
    import importlib
    import re
    import warnings

    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in STDLIB:
            for doc in _docstrings(importlib.import_module(name)):
                for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    words = s.split()
                    if 6 <= len(words) <= 30 and s[0].isupper() and s.endswith(".") and \
                            sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s):
                        found.add(s)
    out = sorted(found)
    random.Random(seed).shuffle(out)
    return out[:n]


def word_salad(n: int, vocab: list[str], seed: int = 0) -> list[str]:
    """n sequences of 6 to 20 random whole words from a tokenizer's vocabulary: they reach the
    embedding rows (words) that neither prose nor templates use."""
    words = [w for w in vocab if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 20))).capitalize() + "." for _ in range(n)]


def mixed(n: int, seed: int = 0, vocab: list[str] | None = None) -> list[str]:
    """Standard-library prose, template sentences and (given a vocabulary) random words, in equal
    parts, shuffled."""
    parts = 3 if vocab else 2
    out = prose(n // parts, seed)
    if vocab:
        out += word_salad(n // parts, vocab, seed)
    out += sentences(n - len(out), seed)
    random.Random(seed).shuffle(out)
    return out
