"""The generated built-in corpus: deterministic, English-like, fast, cached as a token file."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from anetrain.data import BUILTIN_VOCAB_SIZE, TokenFile, builtin_dataset, builtin_tokenizer
from anetrain.data.corpus import DEFAULT_STORIES, builtin_text, builtin_tokenizer_path
from anetrain.data.stories import generate_stories

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def test_deterministic_for_a_seed() -> None:
    assert generate_stories(40, seed=5) == generate_stories(40, seed=5)
    assert generate_stories(40, seed=5) != generate_stories(40, seed=6)
    # A prefix of a longer run is the shorter run.
    assert generate_stories(100, seed=5)[:40] == generate_stories(40, seed=5)


def test_reads_as_simple_english() -> None:
    stories = generate_stories(400, seed=3)
    words: Counter[str] = Counter()
    sentences = 0
    for story in stories:
        assert "\n" not in story and "  " not in story and story == story.strip()
        assert story[0].isupper()
        assert story.endswith((".", "!", '."', '!"', '?"'))
        assert story.count('"') % 2 == 0  # quotes are balanced
        assert not re.search(r"\ba [aeiou]", story)  # "an apple", never "a apple"
        for sentence in re.split(r'(?<=[.!?])"? +(?=["A-Z])', story):
            sentences += 1
            assert sentence.lstrip('"')[0].isupper(), sentence
            assert sentence.rstrip('"')[-1] in ".!?,", sentence
        words.update(w.lower() for w in WORD.findall(story))
        assert "".join(WORD.findall(story)).isascii()
    common = {w for w, _ in words.most_common(12)}
    assert {"the", "and", "to", "a", "was"} <= common
    assert 150 < len(words) < 1000  # a small, learnable vocabulary
    assert 6 <= sum(words.values()) / sentences <= 14  # short sentences


def test_default_size_and_speed(tmp_path: Path) -> None:
    start = time.perf_counter()
    path = builtin_dataset(tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # ~0.2 s here; generous for slow CI machines
    tf = TokenFile(path, BUILTIN_VOCAB_SIZE)
    assert tf.count() == DEFAULT_STORIES  # one BOS per story
    assert 1_000_000 < tf.n_tokens < 2_500_000
    assert len(builtin_text()) > 3_000_000


def test_builtin_dataset_is_cached_and_decodes_to_the_stories(tmp_path: Path) -> None:
    path = builtin_dataset(tmp_path, n_stories=50, seed=8)
    mtime = path.stat().st_mtime_ns
    assert builtin_dataset(tmp_path, n_stories=50, seed=8) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert builtin_dataset(tmp_path, n_stories=50, seed=9) != path
    tf = TokenFile(path, BUILTIN_VOCAB_SIZE)
    tok = builtin_tokenizer()
    starts = [*np.flatnonzero(tf.tokens == 1).tolist(), tf.n_tokens]
    decoded = [tok.decode(tf.tokens[a:b]) for a, b in itertools.pairwise(starts)]
    assert decoded == generate_stories(50, seed=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, builtin_dataset(tmp_path, n_stories=50, seed=9).name]
    )


def test_tokenizer_is_trained_into_the_cache_when_the_asset_is_missing(
    tmp_path: Path, monkeypatch
) -> None:
    from anetrain.data import corpus

    shipped = builtin_tokenizer_path().read_bytes()
    monkeypatch.setattr(corpus, "ASSET_DIR", tmp_path / "no-assets")
    path = builtin_tokenizer_path(tmp_path)
    assert path.parent == tmp_path
    assert path.read_bytes() == shipped
