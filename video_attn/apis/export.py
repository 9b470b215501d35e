"""Export a model to ONNX or TorchScript for deployment, with a parity check against eager PyTorch.

    from video_attn.apis import export_checkpoint

    result = export_checkpoint(cfg, "best.pt", "onnx", "tanet.onnx")   # an ExportResult
    result.max_abs_diff, result.passed

The exported model takes what the PyTorch model takes, a normalised float32 clip batch ``(N, T, 3, H, W)``
with fixed ``N`` (the batch size of the export), ``T = model.num_segments`` and ``(H, W) = data.input_size``,
and gives what it gives in eval mode: action logits ``(N, K)`` (averaged over the T frames, before any
softmax), or the ReID test embedding ``(N, D)`` (the feature ``extract_features`` writes, before its L2
normalisation). Input normalisation is *not* part of the exported model: scale the RGB frames to [0, 1] and
subtract ``data.mean`` / divide by ``data.std`` of the config (then, with ``data.subtract_clip_mean``, each
clip's per-channel mean) before calling it. The ONNX graph names its
input ``clips`` and its output ``logits`` or ``embeddings``.

- ONNX: ``torch.export`` (non-strict) then the ``torch.onnx`` exporter of that program (``dynamo=True``, the
  default since torch 2.9; it needs the ``onnx`` and ``onnxscript`` packages), checked with onnxruntime. The
  weights are stored inside the one ``.onnx`` file.
- TorchScript: ``torch.jit.trace`` (deprecated in recent torch, but the file loads with ``torch.jit.load``
  and needs no Python code of this project), checked with the loaded file.

TAM's default aggregation (``"shift"``, a custom autograd Function) cannot be serialised by TorchScript;
:func:`exportable_copy` exports a copy whose TAMs use the plain-ops form (``"shift_autograd"``), which gives
the same values (logged; the model itself is not changed). A model that still cannot be exported raises
:class:`ExportError`, one line naming the submodule (path and type) where the exporter failed.

The check feeds the exported model and the eager model a random clip other than the one the export traced
with (so a value baked in as a constant is caught) and reports the largest absolute difference of the
outputs; ``passed`` when it is at most ``tolerance``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from video_attn.config.schema import Config
from video_attn.models.temporal.tam import set_tam_aggregation
from video_attn.tasks import build_task

from .runtime import load_model_for_eval

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "ExportError",
    "ExportResult",
    "export_checkpoint",
    "export_input_shape",
    "export_model",
    "exportable_copy",
    "onnx_session",
]

logger = logging.getLogger(__name__)

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME = "clips"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(ValueError):
    """A model that an exporter cannot handle; the message is one line naming the submodule."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how closely it reproduces eager PyTorch."""

    path: str
    format: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def export_input_shape(cfg: Config, batch_size: int = 1) -> tuple[int, int, int, int, int]:
    """``(N, T, 3, H, W)`` of an export of ``cfg``'s model: ``batch_size`` clips of ``model.num_segments``
    frames of ``data.input_size``."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    size = list(cfg.data.input_size)
    if len(size) != 2:
        raise ValueError(f"data.input_size must be [height, width], got {size}")
    return (batch_size, cfg.model.num_segments, 3, int(size[0]), int(size[1]))


def exportable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode that the exporters can trace, with the same outputs.

    Every TAM gets the plain-ops aggregation ``"shift_autograd"`` instead of its custom autograd Function
    (same values; see :func:`video_attn.models.temporal.tam.set_tam_aggregation`). ``model`` is unchanged.
    """
    exportable = copy.deepcopy(model).eval()
    count = set_tam_aggregation(exportable, "shift_autograd")
    if count:
        logger.info("export: %d TAM module(s) switched to the plain-ops aggregation (same values)", count)
    return exportable


# ------------------------------------------------------------------------------------ failure location
def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of the innermost cause of ``exc`` (what went wrong, not the advice)."""
    for cause in reversed(list(_exception_chain(exc))):
        for line in _ANSI.sub("", str(cause)).splitlines():
            line = line.strip()
            if line:
                return (line[:240] + "...") if len(line) > 240 else line
    return type(exc).__name__


def _module_from_traceback(model: nn.Module, exc: BaseException) -> str | None:
    """The innermost submodule of ``model`` whose code was running when ``exc`` was raised."""
    names = {id(m): name for name, m in model.named_modules()}
    found = None
    for cause in _exception_chain(exc):
        for frame, _ in traceback.walk_tb(cause.__traceback__):
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in names:
                found = names[id(owner)]
        if found is not None:
            return found
    return None


def _module_from_graph_node(program: Any, exc: BaseException) -> str | None:
    """The submodule that owns the FX node an ONNX translation error names (``nn_module_stack``)."""
    text = "\n".join(_ANSI.sub("", str(c)) for c in _exception_chain(exc))
    node_names = set(re.findall(r"translating node %(\w+)", text))
    targets = set(re.findall(r"target=([\w.]+)", text))
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if node.name in node_names or f"torch.ops.{node.target}" in targets or str(node.target) in targets:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                return list(stack.values())[-1][0]
    return None


def _python_op_modules(traced: torch.jit.ScriptModule) -> list[tuple[str, str]]:
    """``(module path, function name)`` of every Python call (custom autograd Function) in a traced graph:
    TorchScript cannot save them."""
    found = []
    for node in traced.inlined_graph.nodes():
        if node.kind() == "prim::PythonOp":
            scope = node.scopeName().split("/")[-1]
            path = scope.removeprefix("__module.").removeprefix("__module")
            name = node.pyname() if hasattr(node, "pyname") else "a Python function"
            found.append((path, name))
    return found


def _describe(model: nn.Module, path: str | None) -> str:
    if path is None:
        return f"the model ({type(model).__name__})"
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:  # a scope name that is not a module path
        return f"module {path}"
    return f"module {path or '(root)'} ({type(module).__name__})"


def _export_error(fmt: str, model: nn.Module, path: str | None, reason: str) -> ExportError:
    return ExportError(f"cannot export to {fmt}: {_describe(model, path)} fails: {reason}")


# --------------------------------------------------------------------------------------------- export
def _export_onnx(model: nn.Module, example: Tensor, path: str, output_name: str, optimize: bool) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the onnx, onnxscript and onnxruntime packages ({exc.name} is missing): "
            'pip install "video_attn[export]"'
        ) from None
    if not {"dynamo", "optimize"} <= set(inspect.signature(torch.onnx.export).parameters):
        raise ExportError(
            f"ONNX export needs the torch.export-based exporter (torch>=2.6), not torch {torch.__version__}"
        )
    try:
        with warnings.catch_warnings():
            # nn.GRU / nn.LSTM re-assign their flat weight list while traced: harmless for an eval export
            warnings.filterwarnings("ignore", message=r"The tensor attributes .* were assigned during export")
            program = torch.export.export(model, (example,), strict=False)
    except Exception as exc:  # any tracing failure: name the module and stop
        raise _export_error("onnx", model, _module_from_traceback(model, exc), _first_line(exc)) from exc
    try:
        torch.onnx.export(
            program,
            (example,),
            path,
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            optimize=optimize,
            verbose=False,
        )
    except Exception as exc:
        where = _module_from_graph_node(program, exc) or _module_from_traceback(model, exc)
        raise _export_error("onnx", model, where, _first_line(exc)) from exc


def _export_torchscript(model: nn.Module, example: Tensor, path: str) -> None:
    with warnings.catch_warnings():
        # the deprecation notice of torch.jit, and shape checks that the fixed input shape makes constant
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(model, (example,), check_trace=False)
        except Exception as exc:
            where = _module_from_traceback(model, exc)
            raise _export_error("torchscript", model, where, _first_line(exc)) from exc
        python_ops = _python_op_modules(traced)
        if python_ops:
            where, name = python_ops[0]
            reason = f"calls the Python function {name}, which TorchScript cannot save"
            raise _export_error("torchscript", model, where, reason)
        try:
            traced.save(path)
        except Exception as exc:
            raise _export_error("torchscript", model, None, _first_line(exc)) from exc


def onnx_session(path: str | os.PathLike, num_threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> Any:
    """An onnxruntime ``InferenceSession`` of an exported file: ``num_threads`` intra-op threads (default:
    torch's), on ``providers`` (e.g. ``("CUDAExecutionProvider",)``). Run it with
    ``session.run(None, {"clips": clips_numpy})``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError('an ONNX file runs with onnxruntime: pip install "video_attn[export]"') from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads() if num_threads is None else num_threads
    options.log_severity_level = 3  # errors only: not the optimiser's notes on nodes it leaves alone
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers))


def _run_exported(path: str, fmt: str, clip: Tensor) -> Tensor:
    """The output of the exported file on ``clip`` (CPU)."""
    if fmt == "onnx":
        session = onnx_session(path)
        (output,) = session.run(None, {session.get_inputs()[0].name: clip.numpy()})
        return torch.from_numpy(output)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        loaded = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return loaded(clip)


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: Format,
    input_shape: Sequence[int],
    output_name: str = "output",
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    optimize: bool = True,
) -> ExportResult:
    """Export ``model`` (eval mode, on CPU) for inputs of ``input_shape`` and check the file against it.

    Args:
        model: the model to export; it is not changed (the export runs on :func:`exportable_copy`).
        out: the file to write (``.onnx`` / ``.pt`` by convention); written only when the export succeeds.
        fmt: ``"onnx"`` or ``"torchscript"``.
        input_shape: ``(N, T, 3, H, W)`` the exported model is fixed to (:func:`export_input_shape`).
        output_name: the ONNX output name (``logits`` or ``embeddings``).
        tolerance: the largest absolute output difference that passes the check.
        seed: seeds the random clips of the trace and of the check.
        optimize: run the ONNX exporter's graph optimisation (constant folding, redundant op removal).

    Returns an :class:`ExportResult`; raises :class:`ExportError` (one line, naming the failing submodule).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    shape = tuple(int(s) for s in input_shape)
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"export a model on the CPU (it is on {device}); load it with device='cpu'")
    exportable = exportable_copy(model)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(shape, generator=generator)
    check_clip = torch.randn(shape, generator=generator)

    out = str(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    partial = f"{out}.partial"
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(exportable, example, partial, output_name, optimize)
            else:
                _export_torchscript(exportable, example, partial)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    logger.info("export: wrote %s (%s, input %s)", out, fmt, shape)

    model_was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(check_clip)
    finally:
        model.train(model_was_training)
    actual = _run_exported(out, fmt, check_clip)
    if actual.shape != expected.shape:
        shapes = f"{tuple(actual.shape)}, the model {tuple(expected.shape)}"
        raise ExportError(f"the {fmt} file gives an output of shape {shapes}")
    diff = float((actual.float() - expected.float()).abs().max())
    return ExportResult(
        path=out,
        format=fmt,
        input_name=INPUT_NAME,
        input_shape=shape,
        output_name=output_name,
        output_shape=tuple(expected.shape),
        max_abs_diff=diff,
        tolerance=tolerance,
    )


def export_checkpoint(
    cfg: Config,
    checkpoint: str | os.PathLike,
    fmt: Format,
    out: str | os.PathLike,
    batch_size: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    optimize: bool = True,
) -> ExportResult:
    """The model of ``checkpoint`` (built by ``cfg``; weights loaded with ``weights_only=True``) exported by
    :func:`export_model` for ``batch_size`` clips of ``model.num_segments`` frames of ``data.input_size``:
    output ``logits`` (action) or ``embeddings`` (ReID)."""
    output_name = "embeddings" if build_task(cfg).name == "reid" else "logits"
    model = load_model_for_eval(cfg, checkpoint, torch.device("cpu"))
    return export_model(
        model,
        out,
        fmt,
        export_input_shape(cfg, batch_size),
        output_name=output_name,
        tolerance=tolerance,
        optimize=optimize,
    )
