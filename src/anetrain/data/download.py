"""Fetch the public pretokenized TinyStories shard (Llama-2 32K vocabulary).

Same source as the original project's ``download_data.sh``: a ~1 GB ``.tar.gz`` on Hugging Face
holding ``data00.bin`` ... ``data49.bin``. Instead of saving the archive and extracting it, the
HTTP stream is read through ``tarfile`` in streaming mode and only ``data00.bin`` is written (and
checked: even size, every id < 32000) to ``tinystories_data00.bin``. Without network this fails
with one line saying so and how to continue offline.
"""

from __future__ import annotations

import http.client
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from anetrain.data.errors import DownloadError
from anetrain.data.paths import default_cache_dir
from anetrain.data.progress import Progress, progress
from anetrain.data.tokens import TOKEN_DTYPE, TokenFile
from anetrain.fsutil import atomic_writer

TINYSTORIES_URL = (
    "https://huggingface.co/datasets/enio/TinyStories/resolve/main/tok32000/"
    "TinyStories_tok32000.tar.gz?download=true"
)
TINYSTORIES_MEMBER = "data00.bin"
TINYSTORIES_FILE = "tinystories_data00.bin"
TINYSTORIES_VOCAB = 32000
_CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


def download_tinystories(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    url: str = TINYSTORIES_URL,
    member: str = TINYSTORIES_MEMBER,
    vocab_size: int = TINYSTORIES_VOCAB,
    timeout: float = 30.0,
    force: bool = False,
    show_progress: bool = True,
) -> Path:
    """Download and extract the TinyStories shard; returns the token file's path.

    An existing, valid file is reused unless ``force``. ``url`` may point at a mirror or a
    ``file://`` copy of the archive.
    """
    target = Path(out_dir if out_dir is not None else default_cache_dir()) / TINYSTORIES_FILE
    if target.is_file() and not force:
        TokenFile(target, vocab_size)  # raises a clear error if the cached file is damaged
        return target
    host = _host(url)
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers={"User-Agent": "anetrain"}), timeout=timeout
        )
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"cannot download from {host}: {_reason(err)}; check --url, or download it on a "
            "machine with network and pass --data FILE"
        ) from None
    except _NETWORK_ERRORS as err:
        raise DownloadError(
            f"cannot reach {host}: {_reason(err)}; download it on a machine with network "
            "and pass --data FILE"
        ) from None
    with response:
        total = _content_length(response)
        with progress(f"downloading {host}", total, enabled=show_progress) as bar:
            reader = _CountingReader(response, bar)
            try:
                _extract_member(reader, member, target, vocab_size, url)
            except _NETWORK_ERRORS as err:
                raise DownloadError(
                    f"download from {host} was interrupted: {_reason(err)}; run the command "
                    "again (nothing partial was kept)"
                ) from None
    return target


def _extract_member(stream: BinaryIO, member: str, target: Path, vocab_size: int, url: str) -> None:
    seen: list[str] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for info in archive:
                if Path(info.name).name != member or not info.isfile():
                    seen.append(info.name)
                    continue
                src = archive.extractfile(info)
                if src is None:  # pragma: no cover - isfile() members always have data
                    break
                _copy_checked(src, target, vocab_size, f"{url} [{info.name}]")
                return
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DownloadError(
            f"{url}: not a readable .tar.gz archive ({err}); the server may have returned an "
            "error page - check the URL or download the archive by hand"
        ) from None
    listing = ", ".join(seen[:5]) + (" ..." if len(seen) > 5 else "")
    raise DownloadError(f"{url}: archive has no {member} (members: {listing or 'none'})")


def _copy_checked(src: BinaryIO, target: Path, vocab_size: int, where: str) -> None:
    """Copy a token file out of the archive, checking size parity and ids on the way."""
    n_tokens = n_bad = 0
    first_bad: tuple[int, int] | None = None
    carry = b""
    with atomic_writer(target) as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            data = carry + chunk
            even = len(data) - len(data) % 2
            ids = np.frombuffer(data[:even], dtype=TOKEN_DTYPE)
            carry = data[even:]
            bad = ids >= vocab_size
            count = int(np.count_nonzero(bad))
            if count and first_bad is None:
                pos = int(np.argmax(bad))
                first_bad = (n_tokens + pos, int(ids[pos]))
            n_bad += count
            n_tokens += len(ids)
        if carry:
            raise DownloadError(
                f"{where}: size {2 * n_tokens + 1} bytes is odd, so it is not a uint16 token "
                "file; the archive is damaged - download it again"
            )
        if first_bad is not None:
            raise DownloadError(
                f"{where}: {n_bad} token id(s) >= vocab size {vocab_size} (first at token "
                f"{first_bad[0]}, id {first_bad[1]}); this is not the Llama-2 32K TinyStories "
                "shard - check the URL"
            )
        if n_tokens == 0:
            raise DownloadError(f"{where}: is empty; the archive is damaged - download it again")


class _CountingReader:
    """File-like wrapper that reports bytes read to a progress bar."""

    def __init__(self, raw: BinaryIO, bar: Progress) -> None:
        self.raw = raw
        self.bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bar.update(len(data))
        return data


def _content_length(response: object) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return urllib.request.url2pathname(parts.path)
    return parts.hostname or url


def _reason(err: BaseException) -> str:
    """A one-line reason: 'Connection refused', 'timed out', 'HTTP 404 Not Found'..."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return _one_line(str(err.reason))
        err = err.reason
    return _one_line(getattr(err, "strerror", None) or str(err) or type(err).__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())
