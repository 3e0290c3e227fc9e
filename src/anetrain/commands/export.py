"""``anetrain export``: ``coreml`` (a MIL program as a Core ML ``.mlpackage``, needs coremltools)
and ``hf`` (any model the loader reads as a Hugging Face folder ``transformers`` loads)."""

from __future__ import annotations

import argparse

from anetrain.commands.args import file_or_folder, file_path, output_folder, tokenizer_arg


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="convert programs to other formats")
    kinds = export.add_subparsers(dest="export_kind", metavar="FORMAT", required=True)
    coreml = kinds.add_parser(
        "coreml",
        help="a .mil program (and its weights) as a Core ML .mlpackage",
        description="Translate a MIL program into coremltools' MIL, check that coremltools "
        "infers the same types, and save it as an .mlpackage (no optimisation passes). "
        "Needs coremltools (pip install coremltools).",
    )
    coreml.add_argument("file", type=file_path, help="the .mil text file")
    coreml.add_argument("--out", type=file_path, required=True, help="output path, NAME.mlpackage")
    coreml.add_argument(
        "--weights",
        type=file_or_folder,
        help="folder the BLOBFILE paths are relative to (default: the .mil file's folder)",
    )
    coreml.set_defaults(handler=run_coreml)
    hf = kinds.add_parser(
        "hf",
        help="a model as a Hugging Face folder (config.json, model.safetensors, tokenizer)",
        description="Write a Llama (or, with QK-norm, Qwen3) folder that "
        "transformers.AutoModelForCausalLM.from_pretrained loads with the same logits. Reads "
        "run folders, checkpoints, Hugging Face folders, llama2.c and BLZT files.",
    )
    hf.add_argument("model", metavar="RUN_OR_CKPT_OR_FOLDER", help="the model to export")
    hf.add_argument("--out", type=output_folder, required=True, help="a new (or empty) folder")
    hf.add_argument(
        "--tokenizer",
        metavar="T",
        type=tokenizer_arg,
        help="tokenizer.json or its folder to copy (default: the model's or run's own)",
    )
    hf.add_argument(
        "--merge",
        action="store_true",
        help="LoRA runs: write the base with the adapters folded in (default: the PEFT adapter "
        "folder, adapter_config.json + adapter_model.safetensors)",
    )
    hf.set_defaults(handler=run_hf)


def run_coreml(args: argparse.Namespace) -> int:
    from anetrain.commands.mil import load_program
    from anetrain.mil.coreml import blob_resolver, export_mlpackage

    program = load_program(args.file)
    if program is None:
        return 1
    root = args.weights if args.weights is not None else args.file.parent
    saved = export_mlpackage(program, args.out, blob_resolver(root))
    print(f"wrote {saved}")
    return 0


def run_hf(args: argparse.Namespace) -> int:
    from anetrain.data.corpus import check_tokenizer
    from anetrain.data.hf_tokenizer import HFTokenizer, is_hf_tokenizer_spec
    from anetrain.memory import check_model_load
    from anetrain.model.hf import HFModelError, export_hf
    from anetrain.model.loader import load_model

    check_model_load(args.model)
    model = load_model(args.model, find_tokenizer=args.tokenizer is None)
    if model.adapters is not None and not args.merge:
        from anetrain.model.lora import write_peft

        if args.out.exists() and any(args.out.iterdir()):
            raise HFModelError(f"{args.out}: folder exists and is not empty; choose a new --out")
        write_peft(args.out, model.adapters, model.base)
        print(
            f"wrote {args.out} (PEFT LoRA adapters, rank {model.adapters.lora.rank}, for base "
            f"{model.base}; --merge writes the merged model instead)"
        )
        return 0
    spec = args.tokenizer or model.tokenizer
    if spec is None or not is_hf_tokenizer_spec(spec):
        found = f"its tokenizer is {spec!r}" if spec else "no tokenizer is recorded with it"
        raise HFModelError(
            f"{model.path}: {found}; a Hugging Face folder needs a tokenizer.json: pass "
            "--tokenizer DIR_OR_tokenizer.json"
        )
    check_tokenizer(HFTokenizer.from_path(spec), model.config.vocab_size)
    out = export_hf(args.out, model.params, tokenizer=spec, base_config=model.hf_config)
    arch = "Qwen3ForCausalLM" if model.config.qk_norm else "LlamaForCausalLM"
    print(f"wrote {out} ({arch}, {model.config.n_params / 1e6:.2f}M params, from {model.path})")
    return 0
