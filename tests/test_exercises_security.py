"""Notebook 08's checkers: right answers (and an unusual one) pass, the usual mistakes fail with a hint, scaffolds wait."""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from chatkit import exercises_security as ex

from .feedback import assert_fails


def test_origin_checker(capsys):
    assert ex.check_origin_allowed(lambda origin, own: origin is None or origin in own) is True
    # unusual right answer: compare (scheme, host:port) pairs parsed by urllib
    parsed = lambda origin, own: origin is None or urlsplit(origin)[:2] in {urlsplit(o)[:2] for o in own}  # noqa: E731
    assert ex.check_origin_allowed(parsed) is True
    capsys.readouterr()

    same_host = lambda origin, own: origin is None or origin.split(":")[1] in {o.split(":")[1] for o in own}  # noqa: E731
    assert_fails(
        ex.check_origin_allowed(same_host),
        capsys.readouterr().out,
        "another local port",
        "scheme + host + port",
    )
    strict = lambda origin, own: origin in own  # noqa: E731 - refuses scripts and curl too
    assert_fails(
        ex.check_origin_allowed(strict),
        capsys.readouterr().out,
        "no Origin header",
        "not from a browser page",
    )
    trusts_null = lambda origin, own: origin in (None, "null") or origin in own  # noqa: E731
    assert_fails(
        ex.check_origin_allowed(trusts_null), capsys.readouterr().out, "Origin: null", "must not be trusted"
    )
    assert ex.check_origin_allowed(lambda origin, own: (_ for _ in ()).throw(NotImplementedError)) is None


def _good_name(name):
    name = unicodedata.normalize("NFC", name)
    if not name.strip() or len(name) > 32 or any(unicodedata.category(c).startswith("C") for c in name):
        return None
    return None if unicodedata.normalize("NFKC", name).casefold() == "ai" else name


def test_name_checker(capsys):
    assert ex.check_valid_name(_good_name) is True

    def printable(name):  # unusual right answer: str.isprintable() is False for every C* category
        name = unicodedata.normalize("NFC", name)
        ok = 0 < len(name) <= 32 and name.isprintable()
        return name if ok and unicodedata.normalize("NFKC", name).casefold() != "ai" else None

    assert ex.check_valid_name(printable) is True
    capsys.readouterr()

    assert_fails(
        ex.check_valid_name(lambda name: None if name == "AI" else name), capsys.readouterr().out, "NFC"
    )
    upper_only = lambda name: None if name.upper() == "AI" else _good_name(name.replace("ＡＩ", "x"))  # noqa: E731
    assert_fails(ex.check_valid_name(upper_only), capsys.readouterr().out, "full-width", "NFKC")
    only_rlo = lambda name: None if "\u202e" in name else _good_name(name.replace("\u200b", ""))  # noqa: E731
    assert_fails(ex.check_valid_name(only_rlo), capsys.readouterr().out, "ZERO WIDTH SPACE", "category")


def _take(buckets, key, now, rate, burst):
    tokens, last = buckets.get(key, (float(burst), now))
    tokens = min(burst, tokens + (now - last) * rate)
    buckets[key] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
    return tokens >= 1


def test_bucket_checker(capsys):
    assert ex.check_bucket(_take) is True

    def gcra(buckets, key, now, rate, burst):  # unusual right answer: a theoretical arrival time per key
        tat = max(buckets.get(key, now), now)
        if tat - now > (burst - 1) / rate + 1e-9:
            return False
        buckets[key] = tat + 1 / rate
        return True

    assert ex.check_bucket(gcra) is True
    capsys.readouterr()

    def shared(buckets, key, now, rate, burst):  # one bucket for everybody: the classic mistake
        return _take(buckets, "everyone", now, rate, burst)

    assert_fails(ex.check_bucket(shared), capsys.readouterr().out, "one bucket per key")

    def never_refills(buckets, key, now, rate, burst):
        buckets.setdefault(key, burst)
        buckets[key] -= 1
        return buckets[key] >= 0

    assert_fails(
        ex.check_bucket(never_refills), capsys.readouterr().out, "half a second later", "(now - last) * rate"
    )

    def no_cap(buckets, key, now, rate, burst):  # refills without the min(): a long pause saves up a flood
        tokens, last = buckets.get(key, (float(burst), now))
        tokens += (now - last) * rate
        buckets[key] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
        return tokens >= 1

    assert_fails(ex.check_bucket(no_cap), capsys.readouterr().out, "no more than burst", "min(burst")
