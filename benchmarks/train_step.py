"""A training step through the simulated ANE kernel pipeline vs PyTorch eager, same run.

    python benchmarks/train_step.py [--model stories15m] [--rounds 3] [--steps 5]
    python benchmarks/train_step.py --pipeline static [--ane-extras]

anetrain: one window of ``seq_len`` tokens forward + backward through the ten fp16 kernels on
the ``sim`` backend, weight gradients on the CPU, AdamW, and re-staging the weights.
PyTorch: the same model (fp32, eager) forward + backward + fused AdamW, 2 intra-op threads.
Both use the full vocabulary. Rounds alternate the two to share the machine's noise; the ratio
is of the medians. Also prints the kernels' compile time and this process's peak RSS.
``--pipeline static`` recompiles its baked-weight kernels after every update: the step time
and its ratio are given without and with that recompile (timed apart, as the trainer does).
"""

from __future__ import annotations

import anetrain  # first: it picks OpenBLAS's kernels before NumPy loads them (anetrain.blas)

# isort: split
import argparse
import os
import resource
import statistics
import time

import numpy as np

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.mil.types import FP16
from anetrain.model.config import ModelConfig, load_config
from anetrain.model.params import init_params
from anetrain.train.factory import make_pipeline
from anetrain.train.optim import AdamW, clip_factor, global_norm
from anetrain.train.pipeline import KernelPipeline


def torch_step_fn(cfg: ModelConfig, params, tokens: np.ndarray, targets: np.ndarray):
    import torch

    F = torch.nn.functional
    torch.set_num_threads(2)
    w = {k: torch.tensor(v, requires_grad=True) for k, v in params.tensors.items()}
    opt = torch.optim.AdamW(w.values(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    T, NH, KVH, HD = cfg.seq_len, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    inv = 1.0 / cfg.rope_base ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos, sin = ang.cos().repeat_interleave(2, -1), ang.sin().repeat_interleave(2, -1)
    tok, tgt = torch.tensor(tokens), torch.tensor(targets)

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * g

    def rope(x):
        pairs = x.unflatten(-1, (HD // 2, 2))
        rot = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
        return x * cos[:, None] + rot * sin[:, None]

    def step() -> float:
        x = w["embed"][tok]
        for i in range(cfg.n_layers):
            xn = rms(x, w["rms_att"][i])
            q = rope((xn @ w["wq"][i].T).view(T, NH, HD)).transpose(0, 1)
            k = rope((xn @ w["wk"][i].T).view(T, KVH, HD)).transpose(0, 1)
            v = (xn @ w["wv"][i].T).view(T, KVH, HD).transpose(0, 1)
            k = k.repeat_interleave(NH // KVH, 0)
            v = v.repeat_interleave(NH // KVH, 0)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + o.transpose(0, 1).reshape(T, NH * HD) @ w["wo"][i].T
            h = rms(x, w["rms_ffn"][i])
            x = x + (F.silu(h @ w["w1"][i].T) * (h @ w["w3"][i].T)) @ w["w2"][i].T
        loss = F.cross_entropy(rms(x, w["rms_final"]) @ w["embed"].T, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(w.values(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def anetrain_step_fn(
    pipe: KernelPipeline, params, tokens: np.ndarray, targets: np.ndarray, compiles: list[float]
):
    """One step; the recompile time of a static pipeline is appended to ``compiles`` (ms)."""
    grads = params.zeros_like()
    adam = AdamW(params.flat.size, params.decay_mask())
    pipe.stage_weights(params)  # the first step needs weights in the surfaces too

    def step() -> float:
        grads.flat[...] = 0.0
        loss = pipe.forward_backward(params, grads, tokens, targets, 256.0, 1 / 256)
        pipe.wait()
        clip = clip_factor(global_norm(grads.flat), 1.0)
        adam.step(params.flat, grads.flat, 1e-4, grad_scale=clip)  # clipping fused in
        before = pipe.compile_s
        pipe.stage_weights(params)
        if pipe.compiles_per_stage:
            compiles.append((pipe.compile_s - before) * 1e3)
        return loss

    return step


def blas_kernels() -> str:
    """Which OpenBLAS kernels NumPy runs, and who chose them (PyTorch uses its own MKL)."""
    from threadpoolctl import threadpool_info

    libs = [i for i in threadpool_info() if i["internal_api"] == "openblas"]
    if not libs:
        return "NumPy's BLAS is not OpenBLAS"
    arch = libs[0].get("architecture")
    if anetrain.blas.chosen:
        who = "chosen by anetrain.blas; ANETRAIN_BLAS_AUTO=0 leaves it to OpenBLAS"
    elif "OPENBLAS_CORETYPE" in os.environ:
        who = "OPENBLAS_CORETYPE from the environment"
    else:
        who = "OpenBLAS's own detection"
    return f"OpenBLAS {arch} kernels ({who})"


def timed(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stories15m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    ap.add_argument("--pipeline", choices=["dynamic", "static"], default="dynamic")
    ap.add_argument("--ane-extras", action="store_true", help="static: the 99-kernel variant")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    if args.ane_extras and args.pipeline != "static":
        ap.error("--ane-extras needs --pipeline static")
    try:
        cfg = load_config(args.model)
    except AnetrainError as err:
        ap.error(str(err))
    rng = np.random.default_rng(0)
    seq = rng.integers(0, cfg.vocab_size, cfg.seq_len + 1)
    tokens, targets = seq[:-1], seq[1:]

    start = time.perf_counter()
    backend = runtime.get_backend("sim", compile_budget=10**9)  # no restarts in a benchmark
    pipe = make_pipeline(args.pipeline, cfg, backend, FP16, None, ane_extras=args.ane_extras)
    recompiles: list[float] = []
    ours = anetrain_step_fn(pipe, init_params(cfg, 0), tokens, targets, recompiles)
    compile_ms = pipe.compile_s * 1e3  # a static pipeline compiles its weights on staging
    build_ms = (time.perf_counter() - start) * 1e3
    ours()  # warm up: first evals allocate
    recompiles.clear()
    rss_ours_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    theirs = torch_step_fn(cfg, init_params(cfg, 0), tokens, targets)
    theirs()
    a, b = [], []
    for _ in range(args.rounds):
        a += timed(ours, args.steps)
        b += timed(theirs, args.steps)
    if recompiles:  # the steps' times include their recompile: count it apart
        a = [t - c for t, c in zip(a, recompiles, strict=True)]
    ma, mb = statistics.median(a), statistics.median(b)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"model {args.model}: {cfg.n_params / 1e6:.1f}M params, seq {cfg.seq_len}, "
        f"vocab {cfg.vocab_size}"
    )
    path = "fast" if getattr(pipe.backend, "fast", False) else "numpy"
    print(f"anetrain sim step   median {ma:8.1f} ms  (min {min(a):.1f}; sim path: {path})")
    print(f"torch eager step    median {mb:8.1f} ms  (min {min(b):.1f})")
    print(f"ratio sim/torch     {ma / mb:8.2f}x  (target <= 1.0x)")
    print(f"BLAS                {blas_kernels()}")
    n = len(pipe.kernels)
    print(
        f"{n}-kernel compile {compile_ms:8.1f} ms  (pipeline setup {build_ms:.1f} ms; "
        "target <= 1000 ms)"
    )
    if recompiles:
        mc = statistics.median(recompiles)
        print(
            f"recompile per step  median {mc:8.1f} ms  ({pipe.compiles_per_stage} kernels; "
            f"step + recompile {ma + mc:.1f} ms, ratio {(ma + mc) / mb:.2f}x torch)"
        )
    print(
        f"peak RSS            {rss_ours_mb:8.0f} MiB anetrain alone (before torch loads); "
        f"{rss_mb:.0f} MiB with both"
    )
    pipe.close()


if __name__ == "__main__":
    main()
