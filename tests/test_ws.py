"""chatkit.ws: the bytes a member's connection is written (the rest runs through servers elsewhere)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from chatkit.ws import text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_text_frame_is_what_websockets_serializes(length):
    """Every length class of RFC 6455's header (7 bits, 16 bits, 64 bits) and both edges."""
    data = ("é" * length).encode()[:length]
    assert text_frame(data) == Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("length", [0, 125, 126, 65536])
def test_text_frame_parses_back_as_one_final_text_frame(length):
    """Read back by websockets' own parser as a client would: one final text frame, same payload."""
    data = b"x" * length
    wire = text_frame(data)

    def read_exact(n):
        nonlocal wire
        part, wire = wire[:n], wire[n:]
        yield from ()
        return part

    parser = Frame.parse(read_exact, mask=False)
    try:
        while True:
            next(parser)
    except StopIteration as done:
        frame = done.value
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, data)
    assert wire == b""
