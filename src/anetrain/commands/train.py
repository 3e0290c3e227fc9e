"""``anetrain train``: train a model on the ANE kernel pipeline (or its simulator)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anetrain.commands.args import (
    byte_size,
    count,
    file_path,
    model_path,
    number,
    output_folder,
    seed,
    tokenizer_arg,
)
from anetrain.commands.chipargs import add_chip_options, resolve_chip

# Windows per optimizer step are drawn, run and summed one by one: beyond a few thousand a
# single step takes hours on the simulator (and the window list alone can exhaust memory), so
# a larger value is a typo far more often than a batch size; more --steps is the way to more data.
ACCUM_MAX = 4096


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a transformer through the ANE kernel pipeline",
        description="Train a Llama-style transformer with forward and backward-dx on the ANE "
        "kernels (simulated when no ANE is present). With no arguments: the tiny model on the "
        "built-in story corpus, offline, in a few minutes on a laptop CPU.",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        default=None,
        help="preset: tiny (default), stories15m, stories42m, stories110m, qwen3-0.6b",
    )
    model.add_argument("--config", type=file_path, help="a model config TOML file")
    p.add_argument(
        "--init",
        metavar="PATH",
        type=model_path,
        help="start from these weights: an anetrain checkpoint or run folder, a local Hugging "
        "Face Llama/Qwen3 folder, a llama2.c .bin or a BLZT checkpoint (the architecture "
        "comes from it)",
    )
    p.add_argument(
        "--data",
        type=file_path,
        help="token file (llama2.c uint16, or anetrain's wide uint32); default: built-in corpus",
    )
    p.add_argument(
        "--tokenizer",
        type=tokenizer_arg,
        help="tokenizer.bin, tokenizer.json or its folder, for samples (default: the --init "
        "model's, or built-in when training on the built-in corpus)",
    )
    p.add_argument(
        "--steps",
        type=count(1),
        default=1000,
        help="total optimizer steps of the run, counted from step 0, not steps to add "
        "(default 1000). The learning-rate schedule (warmup, cosine decay to the floor) is laid "
        "out over this total, so resuming with another value changes the schedule (a warning "
        "says so); to train a finished run further, raise it",
    )
    p.add_argument(
        "--lr", type=number(above=0), default=3e-3, help="peak learning rate (default 3e-3)"
    )
    p.add_argument(
        "--accum",
        type=count(1, ACCUM_MAX),
        help="windows of seq_len tokens per optimizer step (default 4; static: 10, as the "
        f"original's windows per compiled batch; at most {ACCUM_MAX})",
    )
    p.add_argument(
        "--pipeline",
        choices=["dynamic", "static"],
        default="dynamic",
        help="dynamic: 10 kernels compiled once, weights staged in surfaces (default); "
        "static: per-layer kernels with baked weights, recompiled after every step",
    )
    p.add_argument(
        "--ane-extras",
        action="store_true",
        help="static only: final RMSNorm, classifier, softmax and RMSNorm backward on kernels",
    )
    p.add_argument(
        "--compile-budget",
        type=count(1),
        metavar="N",
        help="sim only: compiles per process before the run checkpoints and re-executes "
        "itself with --resume (default: the chip's, about 119)",
    )
    p.add_argument(
        "--vocab",
        choices=["auto", "data", "full"],
        default="auto",
        help="the softmax the loss is over. data: only the token ids the data uses (cheap for "
        "a large vocabulary; as maderix/ANE trains from scratch); full: every id, the objective "
        "peft, mlx_lm.lora and transformers optimize; auto (default): full with --init, data "
        "from scratch. A resume keeps the run's own",
    )
    p.add_argument("--warmup", type=count(0), default=20, help="warmup steps (default 20)")
    p.add_argument(
        "--backend",
        choices=["auto", "sim", "ane"],
        default="auto",
        help="auto: ane when available, else sim",
    )
    add_chip_options(p, "chip profile for sim (e.g. m4, m1max); default: m4")
    p.add_argument("--seed", type=seed, default=42)
    p.add_argument("--out", type=output_folder, help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument(
        "--loss-scale",
        type=number(minimum=1),
        default=256.0,
        help="loss scale against fp16 gradient underflow (default 256; at least 1)",
    )
    p.add_argument("--dynamic-loss-scale", action="store_true")
    p.add_argument(
        "--eval-every", type=count(1), default=50, help="validate every N steps (default 50)"
    )
    p.add_argument(
        "--ckpt-every",
        type=count(1),
        default=100,
        help="write ckpt_last every N steps (default 100)",
    )
    p.add_argument(
        "--sample-tokens",
        type=count(0),
        default=60,
        help="tokens to generate after training (0 to skip)",
    )
    p.add_argument(
        "--max-memory",
        type=byte_size,
        metavar="SIZE",
        help="refuse to start when the run's estimated memory exceeds SIZE (e.g. 8G); "
        "default: the machine's available memory",
    )
    lora = p.add_argument_group(
        "LoRA", "fine-tune low-rank adapters on the frozen --init model (PEFT-compatible files)"
    )
    lora.add_argument(
        "--lora-rank",
        type=int,
        metavar="R",
        help="train rank-R adapters W + (alpha/R) B A instead of every weight (needs --init)",
    )
    lora.add_argument(
        "--lora-alpha", type=float, metavar="A", help="LoRA alpha (default: R, scaling 1)"
    )
    lora.add_argument(
        "--lora-dropout",
        type=float,
        metavar="P",
        help="peft's lora_dropout: each adapter's input dropped with probability P while "
        "training, its own mask per projection (default 0: off)",
    )
    lora.add_argument(
        "--lora-targets",
        metavar="LIST",
        help="projections to adapt, from q,k,v,o,gate,up,down (default: all seven)",
    )
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a bar")
    p.add_argument(
        "--dist-timeout",
        type=number(above=0),
        default=300.0,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others in a collective before the "
        "run stops with an error (default 300; must exceed a checkpoint write)",
    )
    p.add_argument(
        "--dist-overlap",
        action="store_true",
        help="under torchrun: sum each layer's gradients across ranks while the backward runs "
        "on (default: one bucketed sum after the backward; see docs/distributed.md)",
    )
    p.set_defaults(handler=run)


def _resolve_backend(name: str) -> str:
    from anetrain.runtime import BackendUnavailable, backend_status
    from anetrain.runtime.registry import resolve_backend_name

    if name == "ane":  # fail before loading data, not when the kernels compile
        ok, why = backend_status("ane")
        if not ok:
            raise BackendUnavailable(why)
    return resolve_backend_name(name)


def run(args: argparse.Namespace) -> int:
    from anetrain.train.distributed import connect

    # torchrun's ranks, else one process
    world = connect(timeout_s=args.dist_timeout, overlap=args.dist_overlap)
    try:
        return _train(args, world)
    finally:
        world.close()


def _train(args: argparse.Namespace, world: Any) -> int:
    from rich.console import Console

    from anetrain import runfolder
    from anetrain.data.corpus import builtin_dataset, check_tokenizer, load_tokenizer
    from anetrain.data.hf_tokenizer import HFTokenizer
    from anetrain.data.tokens import TokenFile
    from anetrain.memory import check_fits, training_bytes
    from anetrain.model.config import load_config
    from anetrain.train.factory import DEFAULT_ACCUM
    from anetrain.train.loop import TrainConfig, Trainer, TrainError, write_json

    console = Console(stderr=False, quiet=not world.is_writer)  # rank 0 speaks for the run
    if args.lora_rank is not None and args.init is None and not args.resume:
        raise TrainError(
            "--lora-rank needs --init DIR: LoRA adapts an existing model (a Hugging Face folder, "
            "a checkpoint or run folder)"
        )
    if args.resume and args.out is None:
        raise TrainError("--resume needs --out DIR (the run folder to continue)")
    prior_run = _resumed_run(args) if args.resume else None
    init = _load_init(args) if args.init is not None and prior_run is None else None
    lora_resume = _lora_resume(args) if args.resume else None
    if lora_resume is not None:
        init = lora_resume[0]
    if init is not None:
        model = init.config
        name = (Path(args.init).name or "init") if args.init is not None else args.out.name
    elif prior_run is not None and args.model is None and args.config is None:
        model, name = prior_run.config, args.out.name  # the run's own architecture
    else:
        model = load_config(args.config if args.config is not None else args.model or "tiny")
        name = args.config.stem if args.config is not None else args.model or "tiny"
    trainable = _lora_trainable(args, init, lora_resume) if init is not None else None
    if trainable is not None:  # the fp32 weights loaded are not needed beside the fp16 base
        init.params = trainable.params
    path = None if trainable is None else trainable.adapter_path
    check_fits(
        f"training {name} ({model.n_params / 1e6:,.1f}M parameters)",
        training_bytes(
            model,
            None if trainable is None else trainable.values.flat.size,
            0 if path is None else path.mask_bytes(model.seq_len),
            full_vocab=_expected_vocab(args, prior_run, init is not None) == "full",
        ),
        args.max_memory,
        hint="use a smaller --model/--config",
    )
    out = args.out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.resume and (out / runfolder.CKPT_LAST).exists():
        raise TrainError(
            f"{out} already holds a run ({runfolder.CKPT_LAST}); continue it with --resume, or "
            "choose another --out (or remove the folder) to start over"
        )
    backend = _resolve_backend(args.backend)  # before the data: fail fast on a missing ANE
    resolve_chip(args)  # --chip/--os/--chip-profile checked (and the profile installed) early
    if args.data is None:
        own = init.tokenizer if init is not None else None
        if own not in (None, "builtin"):  # e.g. a Hugging Face folder's tokenizer.json
            fix = (
                "resume with the --data the run started with"
                if args.resume
                else f"prepare data with `anetrain data prepare TEXT --tokenizer {own} --out "
                "t.bin` and pass --data t.bin"
            )
            raise TrainError(
                f"{init.path}: this model reads tokens of {own}, but the built-in corpus is in "
                f"anetrain's built-in tokenizer's ids; {fix}"
            )
        data_path = builtin_dataset()
        tokenizer_spec = args.tokenizer or "builtin"
    else:
        data_path = args.data
        tokenizer_spec = args.tokenizer or (
            init.tokenizer if init is not None else prior_run.tokenizer if prior_run else None
        )
    if tokenizer_spec is not None:
        tok = load_tokenizer(tokenizer_spec)
        # samples draw only ids the data uses, so a small llama2.c vocabulary is fine; a
        # tokenizer.json that produces ids beyond the model is not
        if isinstance(tok, HFTokenizer):
            check_tokenizer(tok, model.vocab_size)
    data = TokenFile(data_path, vocab_size=model.vocab_size)
    cfg = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        accum=args.accum if args.accum is not None else DEFAULT_ACCUM[args.pipeline],
        warmup=args.warmup,
        seed=args.seed,
        loss_scale=args.loss_scale,
        dynamic_loss_scale=args.dynamic_loss_scale,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        backend=backend,
        chip=args.chip,
        macos=args.macos,
        pipeline=args.pipeline,
        ane_extras=args.ane_extras,
        compile_budget=args.compile_budget,
        vocab=args.vocab,
    )
    ranks = (
        f" x {world.size} ranks ({cfg.accum * world.size} windows per step)"
        if world.size > 1
        else ""
    )
    console.print(
        f"[bold]anetrain train[/]: {name} ({model.n_params / 1e6:.2f}M params, dim "
        f"{model.dim}, {model.n_layers} layers, seq {model.seq_len}) on {backend}"
        f"{' (' + args.chip + ')' if args.chip else ''}{ranks}, {args.pipeline} pipeline"
        f"{' + ANE extras' if args.ane_extras else ''}; data {data_path} "
        f"({data.n_tokens:,} tokens); out {out}"
    )
    progress = _Progress(console, cfg.steps, quiet=args.no_progress or not world.is_writer)
    trainer = Trainer(
        model,
        data,
        cfg,
        out,
        resume=args.resume,
        on_step=progress.update,
        world=world,
        trainable=trainable,
        pretrained=init is not None,
    )
    console.print(f"Loss over the {trainer.vocab_note()} (--vocab {trainer.cfg.vocab})")
    for note in trainer.notes:
        console.print(f"[yellow]warning:[/] {note}")
    if trainer.resumed_world_size not in (None, world.size):
        console.print(
            f"[yellow]Resuming a {trainer.resumed_world_size}-rank run on {world.size} rank(s)[/]:"
            " the window stream continues where it stopped, re-sharded over the new ranks; "
            f"the effective batch is now {cfg.accum * world.size} windows"
        )
    if args.resume:
        resumed = f"[RESUMED step {trainer.step}, {trainer.prior.restarts} restarts so far]"
        console.print(resumed, markup=False)
    if trainable is not None:
        assert trainable.lora is not None
        n = trainable.values.flat.size
        console.print(
            f"LoRA rank {trainable.lora.rank}, alpha {trainable.lora.alpha:g}"
            f"{_dropout_note(trainable.lora.dropout)} on "
            f"{','.join(trainable.lora.targets)}: {n:,} trainable parameters "
            f"({100 * n / model.n_params:.2f}% of {model.n_params / 1e6:.2f}M, base frozen in fp16)"
        )
    elif init is not None:  # the weights to start from replace the scratch init
        trainer.params.flat[...] = init.params.flat
        trainer.pipeline.stage_weights(trainer.params)
    run_config = {
        "model": model.to_dict(),
        "train": trainer.cfg.__dict__,
        "world_size": world.size,
        "data": str(data_path),
        "tokenizer": tokenizer_spec,
    }
    if init is not None:
        run_config["init"] = {"path": str(init.path), "format": init.kind}
        if init.hf_config is not None:
            run_config["init"]["hf_config"] = init.hf_config
    if prior_run is not None and prior_run.init is not None:
        run_config["init"] = prior_run.init  # where the run's weights first came from
    if trainable is not None:
        run_config["lora"] = trainable.record()
    if world.is_writer:
        write_json(out / runfolder.CONFIG, run_config)
    with progress:
        summary = trainer.run()
    if not world.is_writer:
        return 0
    if summary["restart"]:
        console.print(
            f"[exec() restart step {summary['steps']}, "
            f"{trainer.pipeline.backend.compile_count} compiles, loss={summary['final_loss']:.4f}]",
            markup=False,
        )
        reexec(restart_argv(args.argv, out))
    summary["sample"] = _sample(trainer, tokenizer_spec, args, console)
    write_json(out / runfolder.SUMMARY, summary)
    _report(console, summary, trainer)
    if summary["interrupted"]:
        console.print(
            f"[yellow]Interrupted at step {summary['steps']}[/]; checkpoint saved. Continue with: "
            f"anetrain train ... --out {out} --resume"
        )
    return 0


def _lora_trainable(args: argparse.Namespace, init: Any, resumed: Any) -> Any:
    """The LoRA adapters to train on ``init``'s weights (None: full training)."""
    from anetrain.model.lora import lora_config
    from anetrain.train.trainable import LoraTrainable

    if resumed is not None:  # settings from the checkpoint unless given again
        _, rec, base_path = resumed
        rank = args.lora_rank if args.lora_rank is not None else rec.rank
        alpha = args.lora_alpha if args.lora_alpha is not None else rec.alpha
        targets = args.lora_targets or ",".join(rec.targets)
        dropout = args.lora_dropout if args.lora_dropout is not None else rec.dropout
    elif args.lora_rank is None:
        given = [f for f in _LORA_SETTINGS if getattr(args, f[2:].replace("-", "_")) is not None]
        if given:
            from anetrain.train.loop import TrainError

            raise TrainError(f"{given[0]} needs --lora-rank R (it sets up the LoRA adapters)")
        return None
    else:
        rank, alpha, targets = args.lora_rank, args.lora_alpha, args.lora_targets
        dropout = args.lora_dropout if args.lora_dropout is not None else 0.0
    lora = lora_config(init.config, rank, alpha, targets, dropout)
    if resumed is None:
        base_path = str(init.path.resolve())
    return LoraTrainable(
        init.params, lora, args.seed, base_path=base_path, base_vocab_ids=init.vocab_ids
    )


_LORA_SETTINGS = ("--lora-alpha", "--lora-dropout", "--lora-targets")


def _expected_vocab(args: argparse.Namespace, prior_run: _Resumed | None, pretrained: bool) -> str:
    """The vocabulary the Trainer will train over (it decides; this foresees it for the memory
    estimate): a resume's is its checkpoint's."""
    from anetrain.train.loop import run_vocab

    if prior_run is not None and args.vocab == "auto":
        return prior_run.vocab
    return run_vocab(args.vocab, pretrained=pretrained)


def _dropout_note(p: float) -> str:
    return f", dropout {p:g}" if p else ""


def _lora_resume(args: argparse.Namespace) -> tuple[Any, Any, str] | None:
    """For ``--resume`` of a LoRA run: its base model (loaded from the recorded path and
    checked), LoRA settings and base path; None for a full run."""
    from anetrain import runfolder
    from anetrain.model.checkpoint import read_metadata
    from anetrain.model.loader import _lora_base
    from anetrain.model.lora import LoraConfig

    path = args.out / runfolder.CKPT_LAST
    if not path.is_file():
        return None
    rec = read_metadata(path)["extra"].get("lora")
    if not isinstance(rec, dict):
        if args.lora_rank is not None or args.lora_dropout is not None:
            from anetrain.train.loop import TrainError

            raise TrainError(f"{path}: a full training run; resume it without --lora-*")
        return None
    return _lora_base(path, rec["base"]), LoraConfig.from_dict(rec["config"]), rec["base"]["path"]


@dataclass(frozen=True)
class _Resumed:
    """What ``--resume`` takes from the run folder itself: the architecture (from the
    checkpoint's metadata, no tensors read), the tokenizer and the ``init`` record that
    config.json holds."""

    config: Any
    tokenizer: str | None
    init: dict[str, Any] | None
    vocab: str  # the softmax it trains over (a checkpoint from before --vocab: the data's)


def _resumed_run(args: argparse.Namespace) -> _Resumed | None:
    """The run ``--resume`` continues (None: no checkpoint yet, the run starts fresh). The same
    command plus ``--resume`` must work, so an ``--init`` naming the model the run started from
    is accepted (its weights are in the checkpoint by then); another model is refused."""
    from anetrain import runfolder
    from anetrain.errors import AnetrainError
    from anetrain.model.checkpoint import read_metadata
    from anetrain.model.config import from_dict
    from anetrain.model.loader import _run_config, _run_tokenizer
    from anetrain.train.loop import TrainError

    path = args.out / runfolder.CKPT_LAST
    if not path.is_file():
        return None
    if args.init is not None and (args.model is not None or args.config is not None):
        raise TrainError("--init takes the architecture from its model; drop --model/--config")
    try:
        meta = read_metadata(path)
        config = from_dict(meta["config"], source=str(path))
        run = _run_config(args.out)
    except (AnetrainError, AttributeError, TypeError):
        return None  # a damaged run: its resume reports what is wrong
    train_state = meta["extra"].get("train") if isinstance(meta["extra"], dict) else None
    vocab = str((train_state if isinstance(train_state, dict) else {}).get("vocab", "data"))
    init = run.get("init") if isinstance(run.get("init"), dict) else None
    lora = run.get("lora") if isinstance(run.get("lora"), dict) else None
    started = (lora or {}).get("base", {}).get("path") or (init or {}).get("path")
    if args.init is not None and started and not _same_path(Path(args.init), Path(started)):
        raise TrainError(
            f"{args.out} continues the run that started from {started}, but --init names "
            f"{args.init}; drop --init to resume it, or choose another --out for a new run"
        )
    return _Resumed(config, _run_tokenizer(args.out, run), init, vocab)


def _same_path(given: Path, recorded: Path) -> bool:
    """Whether ``given`` names ``recorded``: the same path, or the run folder of a recorded
    checkpoint (a relative record from another working folder that no longer resolves cannot
    be compared: taken as the same)."""
    try:
        if not recorded.exists():
            return True
        g, r = given.resolve(), recorded.resolve()
        return g == r or (g.is_dir() and r.parent == g)
    except OSError:
        return True


def _load_init(args: argparse.Namespace) -> Any:
    """The model ``--init`` names (a :class:`~anetrain.model.loader.LoadedModel`)."""
    from anetrain.memory import check_model_load
    from anetrain.model.loader import load_model
    from anetrain.train.loop import TrainError

    if args.model is not None or args.config is not None:
        raise TrainError("--init takes the architecture from its model; drop --model/--config")
    check_model_load(args.init, args.max_memory)
    loaded = load_model(args.init, find_tokenizer=args.tokenizer is None)
    for note in loaded.notes:
        print(f"note: {note}")
    return loaded


def restart_argv(argv: list[str], out: Path) -> list[str]:
    """The command line that continues this run: the same arguments with ``--out`` and
    ``--resume``, without ``--init`` (the weights are in the checkpoint by then)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--init":
            skip = True
        elif not arg.startswith("--init="):
            kept.append(arg)
    return [*kept, "--out", str(out), "--resume"]


def reexec(argv: list[str]) -> None:
    """Replace this process by ``anetrain <argv>`` (a real exec: only a new process frees
    the ANE compiler's per-process leak). The environment, PYTHONPATH included, carries over."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "anetrain.cli", *argv])


class _Progress:
    """A rich progress bar with step, loss, ms/step and tokens/s (plain lines if disabled)."""

    def __init__(self, console: Any, total: int, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.quiet = quiet
        self.bar = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [bold]{task.fields[loss]}"),
            TextColumn("{task.fields[ms]} ms/step"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self.task = self.bar.add_task("train", total=total, loss="-", ms="-", tps="-")

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, r: Any) -> None:
        self.bar.update(
            self.task,
            completed=r.step,
            loss=f"{r.loss:.4f}",
            ms=f"{r.ms:.0f}",
            tps=f"{r.tokens_per_s:,.0f}",
        )
        if self.quiet and (r.step % 10 == 0 or r.step == 1):
            self.console.print(
                f"step {r.step:5d}  loss {r.loss:.4f}  lr {r.lr:.2e}  "
                f"{r.ms:.0f} ms  {r.tokens_per_s:,.0f} tok/s"
            )


def _sample(
    trainer: Any, tokenizer_spec: str | None, args: argparse.Namespace, console: Any
) -> str | None:
    from anetrain.data.corpus import load_tokenizer
    from anetrain.model.generate import generate

    if args.sample_tokens <= 0 or tokenizer_spec is None:
        return None
    tok = load_tokenizer(tokenizer_spec)
    prompt = tok.encode("Once upon a time", bos=True, eos=False)
    lora = trainer.trainable.lora
    new = generate(
        trainer.trainable.model_params(),
        trainer.model,
        prompt,
        min(args.sample_tokens, trainer.model.seq_len - len(prompt)),
        temperature=0.8,
        top_k=40,
        seed=args.seed,
        # a LoRA run keeps to its frozen base's classifier (as `generate --ckpt RUN` does)
        allowed_ids=trainer.vocab_ids() if lora is None else trainer.trainable.base_vocab_ids,
    )
    return tok.decode(prompt + new)


def _report(console: Any, s: dict[str, Any], trainer: Any) -> None:
    from rich.table import Table

    t = Table(title="Efficiency Report", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    host = " (host)" if s["backend"] == "sim" else ""
    t.add_row("Total steps", f"{s['steps']} ({s['pipeline']} pipeline)")
    t.add_row("Wall time", f"{s['wall_s']:.1f} s")
    if s["compiles_per_batch"]:
        t.add_row(
            "Compile",
            f"{s['compile_s'] * 1e3:.0f} ms ({s['compile_pct']:.1f}% of wall; "
            f"{s['batches']} batches of {s['compiles_per_batch']} recompiles, "
            f"{s['kernels_compiled']} kernels per process, {s['restarts']} exec() restarts)",
        )
    else:
        t.add_row(
            "Compile", f"{s['compile_s'] * 1e3:.0f} ms ({s['kernels_compiled']} kernels, once)"
        )
    t.add_row("Train", f"{s['train_s']:.1f} s ({100 * s['train_s'] / s['wall_s']:.0f}% of wall)")
    t.add_row("ms/step", f"{s['ms_per_step']:.1f}{host}")
    t.add_row("Tokens/s", f"{s['tokens_per_s']:,.0f}{host}")
    if s["world_size"] > 1:
        t.add_row(
            "Data parallel",
            f"{s['world_size']} ranks x {s['windows_per_step'] // s['world_size']} windows; "
            f"all-reduce {s['comm_ms_per_step']:.1f} ms/step "
            f"({100 * s['comm_ms_per_step'] / s['ms_per_step']:.0f}% of the step), "
            f"{s['comm_bytes_per_step'] / 1e6:.1f} MB sent per rank per step",
        )
    t.add_row("Kernel TFLOPS", f"{s['kernel_tflops']:.4f}{host}")
    util = s["utilization_pct"]
    t.add_row(
        f"Utilization of {s['chip']} fp16 peak",
        f"{util:.3f}%{host}" if not math.isnan(util) else "n/a",
    )
    t.add_row(
        f"Loss ({trainer.vocab_note()})",
        f"{s['first_loss']:.4f} -> {s['final_loss']:.4f}"
        + (f" (best val {s['best_val_loss']:.4f})" if s["best_val_loss"] else ""),
    )
    if s.get("val_loss_full") is not None and s["vocab"] != "full":
        t.add_row(
            "Val loss, full vocab", f"{s['val_loss_full']:.4f} (compares with other trainers)"
        )
    if s.get("modeled_ane_ms_per_step"):
        t.add_row(
            f"Modeled ANE ({s['chip']})",
            f"{s['modeled_ane_ms_per_step']:.2f} ms/step kernels, "
            f"{s['modeled_kernel_tflops']:.3f} TFLOPS, "
            f"{s['modeled_utilization_pct']:.1f}% of peak (performance model)",
        )
    if s.get("lora"):
        lora = s["lora"]
        t.add_row(
            "LoRA",
            f"rank {lora['rank']}, alpha {lora['alpha']:g}{_dropout_note(lora['dropout'])} on "
            f"{','.join(lora['targets'])}: "
            f"{s['trainable_params']:,} trainable parameters, base frozen",
        )
    if s["skipped_steps"]:
        t.add_row("Skipped steps", str(s["skipped_steps"]))
    console.print(t)
    if s["backend"] == "sim":
        console.print(
            "[dim]sim backend: times are host measurements of the simulator, not ANE times.[/]"
        )
    if s.get("sample"):
        console.print(f"[bold]Sample:[/] {s['sample']}")
    console.print(f"Run folder: {trainer.out}")
