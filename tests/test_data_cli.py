"""``anetrain data`` end to end: prepare, info, builtin, and download (offline and local server).

The parser is built here from ``commands.data.register`` exactly as ``anetrain.cli`` does; no
test touches the real network (downloads go to 127.0.0.1 or file:// URLs).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import json
import re
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anetrain.commands import data as data_cmd
from anetrain.data import DataError, DownloadError, TokenFile, builtin_tokenizer
from anetrain.data.download import TINYSTORIES_FILE, download_tinystories
from anetrain.errors import AnetrainError


def run(*argv: str) -> int:
    """Parse and dispatch like ``anetrain.cli.main`` (errors print one line, exit 1)."""
    parser = argparse.ArgumentParser(prog="anetrain")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    try:
        return int(args.handler(args) or 0)
    except AnetrainError as err:
        print(f"anetrain: error: {err}", file=sys.stderr)
        return 1


# ---- prepare / info / builtin ------------------------------------------------------------------


def test_prepare_blank_separated_stories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "stories.txt"
    src.write_text("Once upon a time, Lily ran.\nShe was happy.\n\n\n  Tom had a ball.  \n\n")
    out = tmp_path / "out" / "tokens.bin"
    assert run("data", "prepare", str(src), "--tokenizer", "builtin", "--out", str(out)) == 0
    assert "2 stories" in capsys.readouterr().out
    tok = builtin_tokenizer()
    expected = tok.encode("Once upon a time, Lily ran.\nShe was happy.") + tok.encode(
        "Tom had a ball."
    )
    assert TokenFile(out, tok.vocab_size).tokens.tolist() == expected


def test_prepare_lines_json_and_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "a.txt"
    lines.write_text("First story.\n\nSecond story.\nThird story.\n")
    js = tmp_path / "b.json"
    js.write_text(json.dumps([{"story": " Fourth. "}, "Fifth.", {"story": ""}]))
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"story": "Sixth."}\n\n"Seventh."\n')
    out = tmp_path / "t.bin"
    args = ["data", "prepare", str(lines), str(js), str(jl), "--out", str(out), "--quiet"]
    assert run(*args, "--stories", "line") == 0
    tok = builtin_tokenizer()
    ids = TokenFile(out).tokens.tolist()
    assert ids.count(1) == 7
    assert tok.decode(ids) == "First story.Second story.Third story.Fourth.Fifth.Sixth.Seventh."
    assert "7 stories" in capsys.readouterr().out


def test_prepare_with_a_tokenizer_file(tmp_path: Path) -> None:
    tok_path = tmp_path / "tok.bin"
    builtin_tokenizer().save(tok_path)
    src = tmp_path / "s.txt"
    src.write_text("Hi.\n")
    out = tmp_path / "t.bin"
    assert run("data", "prepare", str(src), "--tokenizer", str(tok_path), "--out", str(out)) == 0
    assert TokenFile(out).tokens.tolist() == builtin_tokenizer().encode("Hi.")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.txt", b"fine\n\xff\xfe oops\n", r"bad\.txt:2: not valid UTF-8"),
        ("empty.txt", b"\n\n  \n", "no stories found"),
        ("bad.json", b"{not json", "not valid JSON"),
        ("dict.json", b'{"story": "x"}', "expected a JSON list"),
        ("num.jsonl", b'"ok"\n42\n', r"num\.jsonl:2: expected a string or an object"),
    ],
)
def test_prepare_bad_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "t.bin"
    assert run("data", "prepare", str(src), "--out", str(out), "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("anetrain: error: ")
    assert re.search(message, err), err
    assert not out.exists()  # nothing half-written


def test_prepare_missing_input_and_tokenizer(tmp_path: Path) -> None:
    out = str(tmp_path / "t.bin")
    with pytest.raises(DataError, match="no such input file"):
        data_cmd._prepare(
            argparse.Namespace(
                inputs=[tmp_path / "x.txt"], tokenizer="builtin", out=out, stories="blank", quiet=1
            )
        )
    src = tmp_path / "s.txt"
    src.write_text("a")
    assert run("data", "prepare", str(src), "--tokenizer", str(tmp_path / "no.bin"), "--out", out)
    assert not Path(out).exists()


def test_prepare_progress_without_rich(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # import fails as if not installed
    src = tmp_path / "s.txt"
    src.write_text("A story.\n")
    assert run("data", "prepare", str(src), "--out", str(tmp_path / "t.bin")) == 0
    err = capsys.readouterr().err
    assert err.startswith("tokenizing (9 B) ...\ntokenizing: 9 B in ")


def test_info_and_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "corpus.txt"
    args = ["data", "builtin", "--cache-dir", str(tmp_path), "--stories", "30", "--text", str(text)]
    assert run(*args) == 0
    out = capsys.readouterr().out
    token_path = Path(out.split("tokens:")[1].split(" (")[0].strip())
    assert "30 stories" in out and token_path.is_file()
    assert text.read_text().count("\n\n") == 29
    # Preparing the corpus text gives exactly the cached built-in token file.
    prepared = tmp_path / "prepared.bin"
    assert run("data", "prepare", str(text), "--out", str(prepared), "--quiet") == 0
    assert prepared.read_bytes() == token_path.read_bytes()
    assert run("data", "info", str(token_path), "--tokenizer", "builtin") == 0
    info = capsys.readouterr().out
    assert "stories:  30" in info and "sample:" in info
    bad = tmp_path / "bad.bin"
    bad.write_bytes(np.array([1, 600], dtype="<u2").tobytes())
    assert run("data", "info", str(bad), "--vocab-size", "512") == 1
    assert "first at token 1, id 600" in capsys.readouterr().err


def test_bare_data_command_names_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    from anetrain.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["data"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "download, prepare" in err


# ---- download ----------------------------------------------------------------------------------


def test_offline_download_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback is closed: the connection is refused at once.
    url = "http://127.0.0.1:9/TinyStories_tok32000.tar.gz"
    args = ["data", "download", "tinystories", "--out", str(tmp_path), "--url", url]
    assert run(*args, "--timeout", "2", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("anetrain: error: cannot reach 127.0.0.1: ")
    assert err.rstrip().endswith("download it on a machine with network and pass --data FILE")
    assert list(tmp_path.iterdir()) == []


def make_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SHARD = np.array([1, 450, 12, 31999, 1, 7, 8], dtype="<u2").tobytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a temporary directory, shut down after the test."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_download_extracts_only_the_shard(
    tmp_path: Path, server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, root = server
    make_archive(
        root / "ts.tar.gz",
        {"README.md": b"hi", "tok32000/data00.bin": SHARD, "tok32000/data01.bin": b"\x05\x00"},
    )
    out = tmp_path / "out"
    url = f"{base}/ts.tar.gz?download=true"
    assert run("data", "download", "tinystories", "--out", str(out), "--url", url) == 0
    stdout = capsys.readouterr().out
    assert "7 tokens" in stdout and "first: 1 450 12 31999 1 7 8" in stdout
    assert (out / TINYSTORIES_FILE).read_bytes() == SHARD
    assert [p.name for p in out.iterdir()] == [TINYSTORIES_FILE]
    # An existing valid file is reused without touching the network.
    unreachable = "http://127.0.0.1:9/x.tar.gz"
    assert download_tinystories(out, url=unreachable, timeout=1) == out / TINYSTORIES_FILE


def test_download_from_file_url(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "ts.tar.gz", {"data00.bin": SHARD})
    path = download_tinystories(tmp_path / "o", url=archive.as_uri(), show_progress=False)
    assert path.read_bytes() == SHARD


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"data01.bin": SHARD}, r"archive has no data00\.bin \(members: data01\.bin\)"),
        ({"data00.bin": SHARD + b"\x01"}, r"size 15 bytes is odd"),
        ({"data00.bin": np.array([1, 32000, 5, 40000], "<u2").tobytes()}, r"2 token id\(s\) >= "),
        ({"data00.bin": b""}, "is empty"),
    ],
)
def test_download_rejects_bad_archives(tmp_path: Path, members: dict, message: str) -> None:
    archive = make_archive(tmp_path / "ts.tar.gz", members)
    out = tmp_path / "o"
    with pytest.raises(DownloadError, match=message):
        download_tinystories(out, url=archive.as_uri(), show_progress=False)
    assert not (out / TINYSTORIES_FILE).exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_download_not_gzip_and_http_errors(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, root = server
    (root / "page.html").write_text("<html>Sign in</html>")
    with pytest.raises(DownloadError, match=r"not a readable \.tar\.gz archive"):
        download_tinystories(tmp_path, url=f"{base}/page.html", show_progress=False)
    with pytest.raises(DownloadError, match=r"cannot download from 127\.0\.0\.1: HTTP 404"):
        download_tinystories(tmp_path, url=f"{base}/missing.tar.gz", show_progress=False)
    assert list(tmp_path.iterdir()) == [root]
