"""What a notebook checker prints when an answer is wrong, checked the same way for every notebook."""

from __future__ import annotations

import re


def assert_fails(result, out, *hints, shows_input=True):
    """A failure names the case, the input, what was expected and what came back, and how many
    passed before it; it carries the given hints and no traceback. ``shows_input=False`` for
    checkers whose case is a live exchange (a server, a stream), not one input to print."""
    assert result is False, out
    assert out.startswith("❌"), out
    assert re.search(r"case \d+ of \d+ failed \(\d+ passed before it\)", out), out
    assert "expected:" in out and "got:" in out, out
    assert not shows_input or "input:" in out, out
    for hint in hints:
        assert hint in out, f"missing {hint!r} in:\n{out}"
    assert "Traceback" not in out
