"""Translate our MIL IR into coremltools' PyMIL and export it as an ``.mlpackage``.

Two uses: a cross-check (coremltools re-infers every type from the same arguments, so a
disagreement with our registry points at a bug in one of them) and, later, ``anetrain export
coreml``. coremltools is an optional dependency; it is imported inside the functions so that
``import anetrain.mil.coreml`` works without it.

Recipe that converts on Linux (no ``libcoremlpython`` needed)::

    prog = to_coreml_program(program, resolve_blob=blob_resolver(model_dir))
    export_mlpackage(program, "out.mlpackage", resolve_blob=...)
    # == ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
    #               compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY,
    #               skip_model_load=True).save("out.mlpackage")

* ``minimum_deployment_target`` must be at least the opset of the ops used (``quantize`` and
  ``dequantize`` need iOS17, ``scaled_dot_product_attention`` iOS18; coremltools refuses
  otherwise) and at least iOS16 for fp16 function inputs/outputs (below that coremltools
  silently rewrites them to fp32 with casts). We pass the program's opset: ios16 or ios18.
* ``pass_pipeline=EMPTY`` keeps our ops one to one, in order, under our names; the default
  pipeline rewrites them (e.g. RMSNorm's ``reduce_sum`` then ``mul(1/C)`` becomes
  ``reduce_mean``). Pass ``ct.PassPipeline.DEFAULT`` to optimise.
* ``compute_precision=FLOAT32`` means "leave the dtypes alone": with the default pipeline, the
  ct.convert default (FLOAT16) casts fp32 programs to fp16. (With EMPTY it has no effect.)
* ``skip_model_load=True``: on Linux the model cannot be loaded for prediction anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anetrain.errors import MILError
from anetrain.mil.dialect import OPSET_ORDER
from anetrain.mil.ir import Arg, BlobRef, Function, Literal, Operation, Program, Var
from anetrain.mil.types import DType, TensorType

if TYPE_CHECKING:  # pragma: no cover - typing only
    from coremltools.converters.mil.mil import Program as CoreMLProgram

__all__ = [
    "TRANSLATED_OPS",
    "BlobResolver",
    "CoreMLError",
    "assert_types_match",
    "blob_resolver",
    "compare_types",
    "coreml_target",
    "coreml_types",
    "export_mlpackage",
    "to_coreml_program",
]

BlobResolver = Callable[[BlobRef, TensorType], np.ndarray]

# Ops whose parameters have the same names and meaning in coremltools' builder (``mb.<op>``).
# Listed explicitly so that an op added to our registry fails loudly here until someone checks
# its coremltools counterpart, instead of being passed through on faith.
TRANSLATED_OPS: frozenset[str] = frozenset(
    {
        "const",
        "cast",
        "add",
        "sub",
        "mul",
        "real_div",
        "pow",
        "exp",
        "sqrt",
        "sigmoid",
        "silu",
        "tanh",
        "log",
        "rsqrt",
        "softmax",
        "reduce_sum",
        "reduce_mean",
        "reduce_max",
        "reshape",
        "transpose",
        "slice_by_size",
        "slice_by_index",
        "concat",
        "matmul",
        "conv",
        "scaled_dot_product_attention",
        "constexpr_affine_dequantize",
        "quantize",
        "dequantize",
    }
)

_CT_TARGETS = {"ios15": "iOS15", "ios16": "iOS16", "ios17": "iOS17", "ios18": "iOS18"}


class CoreMLError(MILError):
    """A program cannot be translated to, or is rejected by, coremltools."""


# --------------------------------------------------------------------------------------------
# lazy imports and type mapping


def _ct() -> Any:
    try:
        import coremltools as ct
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CoreMLError(
            "coremltools is not installed; install it with `pip install 'anetrain[test]'` "
            "or `pip install coremltools`"
        ) from err
    return ct


def _ct_types() -> Any:
    _ct()
    from coremltools.converters.mil.mil import types

    return types


def coreml_types() -> dict[DType, Any]:
    """Our element dtypes mapped to coremltools builtin types (``types.fp16``, ...)."""
    t = _ct_types()
    return {
        DType.FP16: t.fp16,
        DType.FP32: t.fp32,
        DType.INT8: t.int8,
        DType.UINT8: t.uint8,
        DType.INT16: t.int16,
        DType.UINT16: t.uint16,
        DType.INT32: t.int32,
        DType.UINT64: t.uint64,
        DType.BOOL: t.bool,
        DType.STRING: t.str,
    }


def coreml_target(opset: Any) -> Any:
    """``"ios16"``/``"ios18"``/... (or a ``ct.target`` value, returned as is) as ``ct.target``."""
    ct = _ct()
    if isinstance(opset, ct.target):
        return opset
    key = str(opset).lower()
    if key not in _CT_TARGETS:
        known = ", ".join(OPSET_ORDER)
        raise CoreMLError(f"no coremltools target for opset {opset!r} (known: {known})")
    return getattr(ct.target, _CT_TARGETS[key])


def _their_type(sym_type: Any) -> TensorType | str:
    """A coremltools var type as our :class:`TensorType`, or a description if it has none."""
    t = _ct_types()
    reverse = {v: k for k, v in coreml_types().items()}
    if t.is_tensor(sym_type):
        elem, shape = sym_type.get_primitive(), sym_type.get_shape()
    else:
        elem, shape = sym_type, ()
    if elem not in reverse:
        return f"{t.builtin_to_string(elem) or elem} {list(shape)}"
    if not all(isinstance(d, (int, np.integer)) for d in shape):
        return f"{reverse[elem]} {list(shape)} (symbolic)"
    return TensorType(reverse[elem], tuple(int(d) for d in shape))


# --------------------------------------------------------------------------------------------
# weights


def blob_resolver(model_dir: str | os.PathLike[str]) -> BlobResolver:
    """Read ``BLOBFILE`` data from ``model_dir`` (the directory ``@model_path`` stands for).

    Files are parsed once and cached; dtype and shape are checked against the const's declared
    type by :meth:`BlobFile.read`, so a stale offset fails instead of reinterpreting bytes.
    """
    from anetrain.mil.blob import BlobFile, read_blob_file

    root = Path(model_dir)
    cache: dict[str, BlobFile] = {}

    def resolve(ref: BlobRef, type_: TensorType) -> np.ndarray:
        if ref.file_name not in cache:
            cache[ref.file_name] = read_blob_file(root / ref.file_name)
        return cache[ref.file_name].read(ref.offset, type_.dtype.numpy, type_.shape)

    return resolve


# --------------------------------------------------------------------------------------------
# translation


def _where(op: Operation) -> dict[str, int | None]:
    return {"line": op.line, "col": op.col}


def _literal_value(
    lit: Literal, op: Operation, resolve_blob: BlobResolver | None
) -> np.ndarray | str:
    if isinstance(lit.data, str):
        return lit.data
    if isinstance(lit.data, BlobRef):
        ref = lit.data
        if resolve_blob is None:
            raise CoreMLError(
                f"{op.op_type} '{op.name}': weights live in BLOBFILE {ref.path} at offset "
                f"{ref.offset}; pass resolve_blob= (e.g. blob_resolver(model_dir)) to read them",
                **_where(op),
            )
        data = np.asarray(resolve_blob(ref, lit.type))
        if data.dtype != lit.type.dtype.numpy or data.shape != lit.type.shape:
            raise CoreMLError(
                f"{op.op_type} '{op.name}': BLOBFILE {ref.path}@{ref.offset} resolved to "
                f"{data.dtype}{list(data.shape)}, but the const declares {lit.type}",
                **_where(op),
            )
        return data
    arr = np.asarray(lit.data, dtype=lit.type.dtype.numpy).reshape(lit.type.shape)
    if arr.ndim:
        return arr
    # Scalars as coremltools' own builder stores them: NumPy scalars keep fp16/int32 exact, but
    # booleans must be Python bools (its reduction value inference passes keep_dims to NumPy as
    # ``keepdims``, which rejects np.bool_ and 0-d arrays under NumPy 2).
    return bool(arr) if arr.dtype == np.bool_ else arr[()]


def _translate_arg(
    arg: Arg, env: Mapping[str, Any], op: Operation, resolve_blob: BlobResolver | None
) -> Any:
    if isinstance(arg, tuple):
        return [_translate_arg(item, env, op, resolve_blob) for item in arg]
    if isinstance(arg, Var):
        if arg.name not in env:
            raise CoreMLError(
                f"{op.op_type} '{op.name}': uses '%{arg.name}' before it is defined",
                **_where(op),
            )
        return env[arg.name]
    return _literal_value(arg, op, resolve_blob)


def _translate_op(
    mb: Any, op: Operation, env: dict[str, Any], resolve_blob: BlobResolver | None
) -> None:
    if op.op_type not in TRANSLATED_OPS or not hasattr(mb, op.op_type):
        raise CoreMLError(
            f"op '{op.op_type}' ('{op.name}') has no coremltools translation; add it to "
            "anetrain.mil.coreml.TRANSLATED_OPS once its mb.* parameters are checked",
            **_where(op),
        )
    if len(op.outputs) != 1:
        raise CoreMLError(
            f"{op.op_type} '{op.name}': only single-output ops are translated", **_where(op)
        )
    out = op.outputs[0]
    kwargs: dict[str, Any] = {}
    if op.op_type == "const":
        val = op.attributes.get("val")
        if val is None:
            raise CoreMLError(f"const '{op.name}' has no 'val'", **_where(op))
        kwargs["val"] = _literal_value(val, op, resolve_blob)
    else:
        args: dict[str, Arg] = dict(op.inputs)
        args.update({k: v for k, v in op.attributes.items() if k != "name"})
        for key, arg in args.items():
            kwargs[key] = _translate_arg(arg, env, op, resolve_blob)
    try:
        result = getattr(mb, op.op_type)(name=out.name, **kwargs)
    except Exception as err:  # coremltools raises ValueError/TypeError/AssertionError/...
        raise CoreMLError(
            f"coremltools rejected {op.op_type} '{op.name}': {type(err).__name__}: {err}",
            **_where(op),
        ) from err
    env[out.name] = result


def _function(program: Program | Function, function: str | None) -> Function:
    if isinstance(program, Function):
        return program
    if function is None:
        return program.main
    if function not in program.functions:
        raise CoreMLError(f"no function '{function}' (functions: {', '.join(program.functions)})")
    return program.functions[function]


def to_coreml_program(
    program: Program | Function,
    resolve_blob: BlobResolver | None = None,
    opset: Any = None,
    *,
    function: str | None = None,
) -> CoreMLProgram:
    """Rebuild ``program`` op by op with coremltools' ``mb`` builder.

    coremltools runs its own type inference (and its validation of every argument) as each op
    is added, so a successful return means coremltools accepts the program; compare the result
    with :func:`compare_types`. ``opset`` overrides the function's opset ("ios17", or a
    ``ct.target``); ``resolve_blob`` reads BLOBFILE weights (see :func:`blob_resolver`).
    """
    _ct()
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import Function as CTFunction
    from coremltools.converters.mil.mil import Program as CTProgram

    fn = _function(program, function)
    target = coreml_target(opset if opset is not None else fn.opset)
    ctypes = coreml_types()
    specs = {}
    for var in fn.inputs:
        if var.dtype not in ctypes or var.dtype is DType.STRING:
            raise CoreMLError(f"function input '{var.name}' has unsupported dtype {var.dtype}")
        specs[var.name] = mb.placeholder(
            shape=var.shape, dtype=ctypes[var.dtype], allow_rank0_input=not var.shape
        )
    try:
        ct_fn = CTFunction(specs, opset_version=target)
    except Exception as err:
        raise CoreMLError(f"coremltools rejected the function inputs: {err}") from err
    with ct_fn:
        env: dict[str, Any] = {var.name: ct_fn.inputs[var.name] for var in fn.inputs}
        for op in fn.operations:
            _translate_op(mb, op, env, resolve_blob)
        missing = [v.name for v in fn.outputs if v.name not in env]
        if missing:
            raise CoreMLError(f"function outputs are never defined: {', '.join(missing)}")
        ct_fn.set_outputs([env[v.name] for v in fn.outputs])
    prog = CTProgram()
    prog.add_function(fn.name, ct_fn)
    return prog


# --------------------------------------------------------------------------------------------
# type comparison


def _their_vars(ct_fn: Any) -> dict[str, Any]:
    table = dict(ct_fn.inputs)
    for op in ct_fn.operations:
        for var in op.outputs:
            table[var.name] = var
    return table


def _our_vars(fn: Function) -> Iterable[Var]:
    yield from fn.inputs
    for op in fn.operations:
        yield from op.outputs


def compare_types(
    ours: Program | Function, theirs: CoreMLProgram, *, function: str | None = None
) -> list[str]:
    """Every var (and function output) whose type differs between us and coremltools.

    Returns one line per difference, empty when the programs agree; used by the cross-check
    to pin a disagreement on a named var rather than on "conversion failed".
    """
    fn = _function(ours, function)
    try:
        ct_fn = theirs.functions[fn.name]
    except KeyError:
        return [f"coremltools program has no function '{fn.name}'"]
    table = _their_vars(ct_fn)
    problems = []
    for var in _our_vars(fn):
        if var.name not in table:
            problems.append(f"%{var.name}: missing in coremltools program (ours: {var.type})")
            continue
        their = _their_type(table[var.name].sym_type)
        if their != var.type:
            what = var.op.op_type if var.op is not None else "input"
            problems.append(f"%{var.name} ({what}): ours {var.type}, coremltools {their}")
    their_outputs = [v.name for v in ct_fn.outputs]
    our_outputs = [v.name for v in fn.outputs]
    if their_outputs != our_outputs:
        problems.append(f"function outputs: ours {our_outputs}, coremltools {their_outputs}")
    return problems


def assert_types_match(
    ours: Program | Function, theirs: CoreMLProgram, *, function: str | None = None
) -> None:
    """Raise :class:`CoreMLError` listing every type disagreement (see :func:`compare_types`)."""
    problems = compare_types(ours, theirs, function=function)
    if problems:
        listing = "\n  ".join(problems)
        raise CoreMLError(f"{len(problems)} type(s) differ from coremltools:\n  {listing}")


# --------------------------------------------------------------------------------------------
# export


def export_mlpackage(
    program: Program | Function,
    path: str | os.PathLike[str],
    resolve_blob: BlobResolver | None = None,
    *,
    opset: Any = None,
    minimum_deployment_target: Any = None,
    pass_pipeline: Any = None,
    compute_precision: Any = None,
    check_types: bool = True,
    function: str | None = None,
) -> Path:
    """Translate ``program``, convert it with ``ct.convert`` and save it as ``path``.

    Defaults follow the module docstring's recipe: the deployment target is the translation
    opset, precision is left as written (FLOAT32 = no inserted casts) and no optimisation
    passes run. With ``check_types`` the translation is first checked with
    :func:`assert_types_match`. Returns the saved package path.
    """
    ct = _ct()
    out = Path(path)
    if out.suffix != ".mlpackage":
        raise CoreMLError(f"{out}: an ML program is saved as a directory ending in .mlpackage")
    fn = _function(program, function)
    opset_used = opset if opset is not None else fn.opset
    prog = to_coreml_program(fn, resolve_blob, opset_used)
    if check_types:
        assert_types_match(fn, prog)
    target = coreml_target(
        minimum_deployment_target if minimum_deployment_target is not None else opset_used
    )
    try:
        model = ct.convert(
            prog,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=(
                compute_precision if compute_precision is not None else ct.precision.FLOAT32
            ),
            pass_pipeline=pass_pipeline if pass_pipeline is not None else ct.PassPipeline.EMPTY,
            skip_model_load=True,
        )
    except Exception as err:
        raise CoreMLError(f"coremltools could not convert the program: {err}") from err
    model.save(str(out))
    return out
