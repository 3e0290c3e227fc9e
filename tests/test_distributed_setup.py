"""Per-rank window sampling (data/sharding.py), the launcher environment, and a torchrun
environment without torch: no process group, no torch needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anetrain.data.errors import DataError
from anetrain.data.sharding import ShardedSampler
from anetrain.data.tokens import WindowSampler
from anetrain.train.distributed import DistributedError, SingleProcess, connect, launch_env

TOKENS = np.arange(5000, dtype=np.uint16)


def _sampler(rank: int = 0, world: int = 1, seed: int = 7) -> ShardedSampler:
    return ShardedSampler(WindowSampler(TOKENS, seq_len=16, seed=seed), rank, world)


def _starts(windows) -> list[int]:
    return [w.start for w in windows]


def test_ranks_split_each_step_of_the_single_process_stream() -> None:
    plain = WindowSampler(TOKENS, seq_len=16, seed=7)  # the oracle: one window at a time
    expected = [plain.next_window().start for _ in range(3 * 6)]
    ranks = [_sampler(r, 3) for r in range(3)]
    for step in range(3):
        got = [_starts(s.next_windows(2)) for s in ranks]
        assert [s for g in got for s in g] == expected[6 * step : 6 * step + 6]
    assert {s.windows_drawn for s in ranks} == {18}
    states = [s.state_dict() for s in ranks]
    assert states[0] == states[1] == states[2] and states[0]["world_size"] == 3


def test_windows_hold_the_tokens_at_their_start() -> None:
    (w,) = _sampler(1, 2).next_windows(1)
    assert np.array_equal(w.inputs, np.arange(w.start, w.start + 16))
    assert np.array_equal(w.targets, w.inputs + 1)


def test_resume_with_another_world_size_continues_the_stream() -> None:
    two = [_sampler(r, 2) for r in range(2)]
    for s in two:
        s.next_windows(2)
    state = two[0].state_dict()
    single = _sampler()
    single.next_windows(4)  # the same 4 windows
    after = _sampler(seed=999)  # the seed comes from the state
    after.load_state_dict(state)
    assert _starts(after.next_windows(4)) == _starts(single.next_windows(4))


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(DataError, match="rank 2 is not in a world of 2"):
        _sampler(2, 2)


def test_launch_environment_detection() -> None:
    assert launch_env({}) is None
    assert isinstance(connect(environ={}), SingleProcess)
    env = launch_env(
        {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    )
    assert env is not None and (env.rank, env.world_size, env.local_rank) == (1, 2, 1)
    assert env.master == "10.0.0.1:29500"
    with pytest.raises(DistributedError, match="not integers"):
        launch_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="RANK=3 is not in WORLD_SIZE=2"):
        launch_env({"RANK": "3", "WORLD_SIZE": "2"})


def test_ring_bytes_per_step() -> None:
    world = SingleProcess()
    assert world.bytes_per_step(1000) == 0
    world.size = 4
    assert world.bytes_per_step(1000) == 2 * 3 * 1000 * 4 // 4


def test_torchrun_environment_without_torch_names_the_extra(tmp_path: Path) -> None:
    argv = ["train", "--backend", "sim", "--steps", "1", "--out", str(tmp_path / "r")]
    code = (
        "import sys; sys.modules['torch'] = None; from anetrain.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    env = dict(os.environ, RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "anetrain: error: torchrun environment (WORLD_SIZE=2) but torch is not installed: "
        "pip install 'anetrain[distributed]'"
    ]
    assert not (tmp_path / "r").exists()
