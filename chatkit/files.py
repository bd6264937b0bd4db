"""Attachments: what an uploaded file is, decided from its bytes — no I/O.

An upload (``POST /files`` on the HTTP port, see :mod:`chatkit.http`) is
accepted only if its *content* is one of a short list of types, whatever its
name or its ``Content-Type`` claim:

- the type is sniffed from the bytes by ``filetype`` (magic numbers, a
  maintained library; the name and the declared type are never trusted);
- images (PNG, JPEG, GIF, WebP) must also decode with Pillow, within a pixel
  limit (a decompression bomb is refused before it is decoded), and get a
  thumbnail (at most :data:`THUMB_SIZE` pixels a side, WebP, metadata dropped);
- audio (WebM, Ogg, MPEG, WAV, MP4/M4A — what ``MediaRecorder`` records) and
  PDF are kept as they are; HTML, SVG, scripts and everything else are refused.

Nothing here can make the server serve a file as HTML or script: the type a
file is served with is the sniffed one, from this list (see ``docs/protocol.md``
for the download headers). :func:`inspect_upload` is CPU work (Pillow), so the
server runs it in a thread.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import filetype
import pathvalidate
from PIL import Image, ImageOps

from .errors import ChatkitError
from .protocol import Attachment

__all__ = [
    "ACCEPTED_TYPES",
    "MAX_UPLOAD_BYTES",
    "MAX_IMAGE_PIXELS",
    "REFUSED_REQUEST_TYPES",
    "THUMB_SIZE",
    "THUMB_TYPE",
    "Upload",
    "UploadRefused",
    "check_request_type",
    "clean_name",
    "content_disposition",
    "inspect_upload",
    "sniff",
]

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
"""Largest upload, in bytes (``chatkit serve --max-upload-bytes``)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Largest image, in pixels (width × height): a bigger one is refused before it is decoded."""
THUMB_SIZE = 320
"""A thumbnail's longest side, in pixels."""
THUMB_TYPE = "image/webp"
MAX_NAME_CHARS = 120
"""Longest stored file name (longer ones are cut before the extension)."""

# What filetype reports -> the type the file is stored and served with. Containers that hold
# sound for MediaRecorder (WebM, Ogg, MP4) are labelled audio/*: they are played by <audio>.
ACCEPTED_TYPES: dict[str, str] = {
    "image/png": "image/png",
    "image/jpeg": "image/jpeg",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
    "audio/webm": "audio/webm",
    "video/webm": "audio/webm",
    "audio/ogg": "audio/ogg",
    "video/ogg": "audio/ogg",
    "audio/mpeg": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wav": "audio/wav",
    "audio/mp4": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "video/mp4": "audio/mp4",
    "application/pdf": "application/pdf",
}
_PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_EXTENSIONS = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "audio/webm": (".webm", ".weba"),
    "audio/ogg": (".ogg", ".oga", ".opus"),
    "audio/mpeg": (".mp3",),
    "audio/wav": (".wav",),
    "audio/mp4": (".m4a", ".mp4"),
    "application/pdf": (".pdf",),
}

REFUSED_REQUEST_TYPES = frozenset({"multipart/form-data", "text/plain", "application/x-www-form-urlencoded"})
"""Request ``Content-Type`` values an upload may not have: the three a cross-site page can send
without a CORS preflight (a "simple" request), so refusing them keeps uploads behind the origin
policy. A missing ``Content-Type`` is refused for the same reason."""


class UploadRefused(ChatkitError):
    """An upload the server does not keep: ``status`` and ``code`` go into the coded answer."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Upload:
    """An accepted upload: what messages will show of it, its bytes, and a thumbnail (images)."""

    attachment: Attachment
    data: bytes
    thumb: bytes | None


def check_request_type(content_type: str | None) -> None:
    """Refuse (415 ``unsupported_media_type``) an upload sent as a form, as text, or untyped."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media or media in REFUSED_REQUEST_TYPES:
        raise UploadRefused(
            415,
            "unsupported_media_type",
            "send the file as the raw body, with Content-Type: application/octet-stream or the file's type",
        )


def too_large(size: int | None, limit: int) -> UploadRefused:
    shown = f"{size} bytes" if size is not None else "more"
    return UploadRefused(413, "too_large", f"the file is {shown}; the limit is {limit} bytes", max=limit)


def sniff(data: bytes) -> str:
    """The type of ``data`` from its bytes (one of :data:`ACCEPTED_TYPES`'s values), or 415
    ``unsupported_type``."""
    kind = filetype.guess(data)
    accepted = ACCEPTED_TYPES.get(kind.mime) if kind is not None else None
    if accepted is None:
        found = kind.mime if kind is not None else "not a known binary format"
        raise UploadRefused(
            415,
            "unsupported_type",
            f"this file's content is {found}; accepted: PNG, JPEG, GIF, WebP images, "
            "WebM, Ogg, MP3, WAV, M4A audio and PDF",
        )
    return accepted


def clean_name(raw: str | None, type_: str, *, encoded: bool = False) -> str:
    """A file name fit to store and show: the last path part only, no control or bidi
    characters, no characters file systems refuse (``pathvalidate``), at most
    :data:`MAX_NAME_CHARS` characters, and an extension that matches the sniffed type
    (``photo.html`` holding a PNG becomes ``photo.html.png``). ``encoded``: ``raw`` is
    percent-encoded UTF-8 (the ``X-Filename`` header)."""
    name = raw or ""
    if encoded:
        name = unquote(name, errors="replace")
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    name = pathvalidate.sanitize_filename(name, platform="universal").strip(" .")
    extensions = _EXTENSIONS.get(type_, ())
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if not extensions or f".{ext.lower()}" not in extensions:
        stem, ext = name, extensions[0][1:] if extensions else "bin"
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(" .") or "file"
    return f"{stem}.{ext}"


def content_disposition(attachment: Attachment) -> str:
    """``inline`` for images (shown in the page), ``attachment`` for everything else (never
    rendered in the server's origin), with the name as RFC 6266/5987 ``filename*`` and an ASCII
    fallback."""
    disposition = "inline" if attachment.is_image else "attachment"
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in attachment.name
    )
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(attachment.name, safe='')}"


def inspect_upload(
    data: bytes,
    name: str | None,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    encoded_name: bool = True,
) -> Upload:
    """Decide what ``data`` is and whether to keep it; raise :class:`UploadRefused` if not.

    ``name`` is the sender's (percent-encoded with ``encoded_name``); it is cleaned, never
    trusted for the type.
    """
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    if not data:
        raise UploadRefused(400, "empty_file", "the upload is empty")
    type_ = sniff(data)
    width = height = None
    thumb = None
    if type_ in _PILLOW_FORMATS:
        width, height, thumb = _image(data, type_, max_pixels)
    attachment = Attachment(
        id=hashlib.sha256(data).hexdigest(),
        name=clean_name(name, type_, encoded=encoded_name),
        type=type_,
        size=len(data),
        width=width,
        height=height,
        thumb=thumb is not None,
    )
    return Upload(attachment, data, thumb)


def _image(data: bytes, type_: str, max_pixels: int) -> tuple[int, int, bytes]:
    """Decode an image (refusing bombs and broken files); its shown size, and a WebP thumbnail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[type_]]) as image:
                if image.width * image.height > max_pixels:  # from the header: nothing decoded yet
                    raise UploadRefused(
                        413,
                        "image_too_large",
                        f"the image is {image.width}×{image.height} pixels; the limit is {max_pixels} pixels",
                        max_pixels=max_pixels,
                    )
                image.load()  # decode it all: a truncated or corrupt file fails here
                shown = ImageOps.exif_transpose(image)  # the size and thumbnail as viewers show it
                width, height = shown.size
                preview = shown.convert("RGBA" if _has_alpha(shown) else "RGB")
                preview.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                preview.save(out, "WEBP", quality=80)
    except UploadRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadRefused(413, "image_too_large", f"the image is too large to decode: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UploadRefused(415, "bad_image", f"the file does not decode as {type_}: {exc}") from None
    return width, height, out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
