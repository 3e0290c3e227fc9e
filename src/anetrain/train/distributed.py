"""Data-parallel training over ``torch.distributed`` (gloo), one process per ANE, via torchrun.

``torchrun --nproc-per-node N [--nnodes M ...] -m anetrain train ...`` starts one process per
rank with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in its environment;
:func:`connect` sees them and joins the gloo process group (CPU tensors over TCP, on macOS and
Linux). The training loop talks to the world through the few methods of :class:`SingleProcess`
(the one-process case, where each is free) and :class:`DataParallel`:

* :meth:`reduce_step` sums the flat fp32 gradient buffer across ranks in place. ``torch.from_numpy``
  shares the NumPy memory, so nothing is copied. Without overlap the buffer goes in buckets, all
  issued asynchronously before the first wait, so gloo pipelines them; with ``overlap`` the
  :meth:`grads_hook` starts each layer's tensors as soon as the last window's backward has
  finished them, so the sum runs while the backward works on the layers below (the embedding,
  finished last, goes last).
* :meth:`check_identical` compares CRC-32s of every rank's parameters, optimizer moments and run
  state (a few integers gathered), before a checkpoint: diverged ranks stop the run.
* :meth:`broadcast_state` hands rank 0's checkpoint to every rank on ``--resume`` (the other
  Macs need no copy of the run folder).

Every collective runs under the process group's timeout, so a rank that dies (its sockets close)
or hangs (nothing arrives) ends the run on every other rank with a :class:`DistributedError`
within that bound; torchrun then stops the remaining workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from anetrain.errors import AnetrainError
from anetrain.model.params import LayerParams, Params

EXTRA = "distributed"
DEFAULT_TIMEOUT_S = 300.0  # longer than rank 0 writing the largest preset's checkpoint
DEFAULT_BUCKET_MB = 25.0  # torch DDP's default bucket size
RESUME_HINT = "the run folder's last checkpoint is intact: rerun the same command with --resume"


class DistributedError(AnetrainError):
    """The ranks cannot start, disagree, or lost each other."""


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun (or any ``env://`` launcher) told this process."""

    rank: int
    world_size: int
    local_rank: int
    master: str  # MASTER_ADDR:MASTER_PORT


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """The launcher's settings, or None when this is a plain single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        raise DistributedError(
            f"RANK={env['RANK']!r} WORLD_SIZE={env['WORLD_SIZE']!r} are not integers; launch "
            "with torchrun, or unset them for a single process"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is not in WORLD_SIZE={world}; launch with torchrun")
    master = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    return LaunchEnv(rank, world, local, master)


def connect(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    bucket_mb: float = DEFAULT_BUCKET_MB,
    overlap: bool = False,
    environ: Mapping[str, str] | None = None,
) -> SingleProcess:
    """The world this process trains in: :class:`DataParallel` under torchrun, else a
    :class:`SingleProcess`."""
    env = launch_env(environ)
    if env is None:
        return SingleProcess()
    return DataParallel(env, timeout_s=timeout_s, bucket_mb=bucket_mb, overlap=overlap)


class SingleProcess:
    """The one-process world: every collective is the identity."""

    rank = 0
    size = 1
    comm_ms = 0.0  # time the last step waited for communication

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes checkpoints, metrics and the summary (rank 0 only)."""
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.size}"

    def bytes_per_step(self, n_grads: int) -> int:
        """Bytes each rank sends per step in a ring all-reduce of ``n_grads`` fp32 values:
        ``2 (W-1)/W`` times the buffer (reduce-scatter, then all-gather)."""
        return int(2 * (self.size - 1) * n_grads * 4 / self.size)

    def reduce_step(self, grads: np.ndarray, scalars: Sequence[float]) -> list[float]:
        """Sum ``grads`` (flat fp32, in place) and ``scalars`` over the ranks."""
        return list(scalars)

    def grads_hook(self, grads: Params) -> Callable[[int | None], None] | None:
        """The pipeline's ``grads_done`` callback for the step's last window (None: no
        overlap; :meth:`reduce_step` then sums the whole buffer)."""
        return None

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (so decisions taken on it agree)."""
        return value

    def check_identical(self, arrays: Mapping[str, np.ndarray], state: Any) -> None:
        """Stop unless every rank holds the same ``arrays`` and JSON-able ``state``."""

    def broadcast_state(
        self, load: Callable[[], Any], arrays: Callable[[Any], Sequence[np.ndarray]]
    ) -> Any:
        """``load()`` on rank 0, handed to every rank: its picklable object and, in place, the
        arrays ``arrays(obj)`` names (rank 0's contents overwrite the others')."""
        return load()

    def close(self) -> None:
        pass


class DataParallel(SingleProcess):
    """One rank of a gloo process group."""

    def __init__(
        self, env: LaunchEnv, *, timeout_s: float, bucket_mb: float, overlap: bool
    ) -> None:
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            raise DistributedError(
                f"torchrun environment (WORLD_SIZE={env.world_size}) but torch is not installed: "
                f"pip install 'anetrain[{EXTRA}]'"
            ) from None
        if not dist.is_available() or not dist.is_gloo_available():
            raise DistributedError(
                f"this torch build has no gloo backend: pip install 'anetrain[{EXTRA}]'"
            )
        self._torch, self._dist = torch, dist
        self.rank, self.size = env.rank, env.world_size
        self.env = env
        self.timeout_s = timeout_s
        self.bucket_elems = max(1, int(bucket_mb * 2**20 / 4))
        self.overlap = overlap
        self._started: list[Any] = []  # async all-reduces the backward already issued
        with self._collective(f"joining the process group at {env.master}"):
            dist.init_process_group(
                "gloo",
                init_method="env://",
                rank=env.rank,
                world_size=env.world_size,
                timeout=timedelta(seconds=timeout_s),
            )
        self._previous_sigterm = _stop_on_sigterm(self.label)

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, ValueError, OSError) as err:  # DistBackendError is a RuntimeError
            raise DistributedError(
                f"{self.label}: {what} failed ({_reason(err)}): another rank died, hung past the "
                f"{self.timeout_s:.0f} s timeout (--dist-timeout), or the network dropped; "
                f"{RESUME_HINT}"
            ) from None

    def reduce_step(self, grads: np.ndarray, scalars: Sequence[float]) -> list[float]:
        start = time.perf_counter()
        small = self._torch.tensor(list(scalars), dtype=self._torch.float64)
        if not self._started:  # no overlap: the whole buffer now
            self._start(_buckets(grads, self.bucket_elems))
        self._start([small])
        works, self._started = self._started, []
        with self._collective("the gradient all-reduce"):
            for work in works:
                work.wait()
        self.comm_ms = (time.perf_counter() - start) * 1e3
        return small.tolist()

    def _start(self, arrays: Sequence[Any]) -> None:
        """Issue in-place async sums of NumPy views (zero-copy) or tensors."""
        torch, dist = self._torch, self._dist
        with self._collective("the gradient all-reduce"):
            for a in arrays:
                tensor = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                self._started.append(dist.all_reduce(tensor, async_op=True))

    def grads_hook(self, grads: Params) -> Callable[[int | None], None] | None:
        if not self.overlap:
            return None

        per_layer = [f.name for f in dataclasses.fields(LayerParams)]  # the same order everywhere
        shared = [t for name, t in grads.items() if name not in per_layer]  # embed, final norm..

        def done(layer: int | None) -> None:
            if layer is None:
                self._start(shared)
            else:
                lp = grads.layer(layer)
                views = (getattr(lp, f) for f in per_layer)
                self._start([v for v in views if v is not None])  # q/k norms only with qk_norm

        return done

    def mean(self, value: float) -> float:
        total = self._torch.tensor([value], dtype=self._torch.float64)
        with self._collective("averaging the validation loss"):
            self._dist.all_reduce(total)
        return float(total.item()) / self.size

    def check_identical(self, arrays: Mapping[str, np.ndarray], state: Any) -> None:
        names = [*arrays, "run state"]
        crcs = [zlib.crc32(np.ascontiguousarray(a).data) for a in arrays.values()]
        crcs.append(zlib.crc32(json.dumps(state, sort_keys=True, default=str).encode()))
        mine = self._torch.tensor(crcs, dtype=self._torch.int64)
        gathered = [self._torch.zeros_like(mine) for _ in range(self.size)]
        with self._collective("the checkpoint checksum"):
            self._dist.all_gather(gathered, mine)
        ref = gathered[0].tolist()
        for rank, other in enumerate(gathered[1:], start=1):
            diff = [n for n, a, b in zip(names, ref, other.tolist(), strict=True) if a != b]
            if diff:
                raise DistributedError(
                    f"{self.label}: rank {rank} holds different {', '.join(diff)} than rank 0 "
                    "(CRC-32 mismatch before a checkpoint): the ranks diverged, so no checkpoint "
                    "was written; check every rank runs the same anetrain version, arguments and "
                    "data, then continue from the last checkpoint with --resume"
                )

    def broadcast_state(
        self, load: Callable[[], Any], arrays: Callable[[Any], Sequence[np.ndarray]]
    ) -> Any:
        dist, torch = self._dist, self._torch
        box: list[Any] = [None]
        if self.rank == 0:
            try:
                box[0] = ("ok", load())
            except AnetrainError as err:
                box[0] = ("error", str(err))
                with self._collective("sharing rank 0's checkpoint"):
                    dist.broadcast_object_list(box, src=0)
                raise
        with self._collective("sharing rank 0's checkpoint"):
            dist.broadcast_object_list(box, src=0)
            status, obj = box[0]
            if status == "error":
                raise DistributedError(f"{self.label}: rank 0 could not resume: {obj}")
            for array in arrays(obj):
                dist.broadcast(torch.from_numpy(array), src=0)
        return obj

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def loopback_launcher(nproc: int) -> tuple[list[str], dict[str, str]]:
    """The torchrun command (argv prefix) and environment for ``nproc`` ranks on this machine
    with every connection on 127.0.0.1 (tests, benchmarks, trying it out)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--local-addr=127.0.0.1",
        "--monitor-interval=0.1",
    ]
    loopback = "lo0" if sys.platform == "darwin" else "lo"
    return argv, {"GLOO_SOCKET_IFNAME": loopback, "OMP_NUM_THREADS": "1"}


def _reason(err: BaseException) -> str:
    """The first sentence of a gloo error, without its source-file prefix."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip()) or type(err).__name__
    first = text.splitlines()[0]
    end = first.find(". ")
    return first[: end if 0 < end < 160 else 160]


def _buckets(flat: np.ndarray, size: int) -> list[np.ndarray]:
    """Contiguous views of ``flat`` of at most ``size`` elements each."""
    return [flat[i : i + size] for i in range(0, flat.size, size)]


def _stop_on_sigterm(label: str) -> Any:
    """torchrun stops the surviving ranks with SIGTERM when one fails: say so in one line
    instead of dying silently (the run's last checkpoint is written atomically, so intact)."""

    def handler(signum: int, frame: object) -> None:
        raise DistributedError(
            f"{label}: stopped by the launcher (SIGTERM): another rank failed or the run was "
            f"cancelled; {RESUME_HINT}"
        )

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: keep the default
        return signal.SIG_DFL
