"""Notebook 08's checkers: right answers pass, the usual mistakes fail with a hint, scaffolds wait."""

from __future__ import annotations

import unicodedata

from chatkit import exercises_security as ex


def test_origin_checker(capsys):
    assert ex.check_origin_allowed(lambda origin, own: origin is None or origin in own) is True
    same_host = lambda origin, own: origin is None or origin.split(":")[1] in {o.split(":")[1] for o in own}  # noqa: E731
    assert ex.check_origin_allowed(same_host) is False  # ports ignored: a page on another port gets in
    assert "another local port" in capsys.readouterr().out
    assert ex.check_origin_allowed(lambda origin, own: (_ for _ in ()).throw(NotImplementedError)) is None


def test_name_checker(capsys):
    def good(name):
        name = unicodedata.normalize("NFC", name)
        if not name.strip() or len(name) > 32 or any(unicodedata.category(c).startswith("C") for c in name):
            return None
        return None if unicodedata.normalize("NFKC", name).casefold() == "ai" else name

    assert ex.check_valid_name(good) is True
    assert ex.check_valid_name(lambda name: None if name == "AI" else name) is False  # no NFC
    assert "NFC" in capsys.readouterr().out


def test_bucket_checker(capsys):
    def take(buckets, key, now, rate, burst):
        tokens, last = buckets.get(key, (float(burst), now))
        tokens = min(burst, tokens + (now - last) * rate)
        buckets[key] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
        return tokens >= 1

    assert ex.check_bucket(take) is True

    def shared(buckets, key, now, rate, burst):  # one bucket for everybody: the classic mistake
        return take(buckets, "everyone", now, rate, burst)

    assert ex.check_bucket(shared) is False
    assert "one bucket per key" in capsys.readouterr().out
