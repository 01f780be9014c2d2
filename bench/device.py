"""Where and in what precision a run computes: the one place both are decided.

:func:`parse_device` checks the user's ``--device`` text (``auto`` decided here) and keeps ``cuda``
meaning "the CUDA GPUs" for the executors that spread workers over them; :func:`resolve_device`
turns it into the concrete ``torch.device`` a run uses (``cuda`` -> ``cuda:<current>``).
:func:`resolve_precision` maps ``cfg.precision`` to what that device can do; :func:`numerics` and
:func:`autocast` apply the result. Training, the measurements and ``bench perf`` all use these.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import UserError, reason


def parse_device(device: str | None) -> str:
    """'auto' (or None) -> 'cuda' when a GPU is visible, else 'cpu'; anything else is checked."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is visible (accepted here: cpu, auto)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"bad device {device!r} (accepted: auto, cpu, cuda, cuda:<index>)")
    return device


def auto_device_note(device: str | None) -> str | None:
    """The one line to print when ``--device auto`` (or None) falls back to the CPU, else None: the
    record says which device ran, but a user who expected a GPU should hear it at once."""
    if device in (None, "auto") and not torch.cuda.is_available():
        return "--device auto: no CUDA GPU is visible, running on the CPU"
    return None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The concrete ``torch.device``: text as :func:`parse_device` accepts it, or a ``torch.device``.

    ``cuda`` without an index is the current CUDA device, so events, streams, bf16 support and graph
    capture (which use the current device) and the tensors agree. A UserError for a bad name or a
    CUDA device on a machine without one.
    """
    if not isinstance(device, torch.device):
        text = parse_device(None if device is None else str(device))
        try:
            device = torch.device(text)
        except (RuntimeError, TypeError) as e:
            raise UserError(f"bad device {text!r} ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {str(device)!r} asked for, but no CUDA GPU is visible (accepted here: cpu, auto)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make ``device`` the current CUDA device (library calls that use the current device, e.g.
    cuBLAS handles, then go to the same one); a no-op elsewhere."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def release_cached_memory(device: str | torch.device | None) -> str | None:
    """Where CUDA is in use, collect garbage and ``torch.cuda.empty_cache()``; never raises.

    Returns None, or the one-line reason the release failed: on torch < 2.12 a failed CUDA-graph
    capture leaves the caching allocator believing a capture is under way and ``empty_cache()``
    raises; a cleanup between runs must not take a run's record (or the worker) down with it.
    Every ``empty_cache()`` of the project goes through here.
    """
    kind = device.type if isinstance(device, torch.device) else str(device or "")
    if not kind.startswith("cuda") or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    gc.collect()  # tensors in reference cycles hold blocks empty_cache() cannot release
    try:
        torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001 - whatever the allocator says, the caller carries on
        return f"torch.cuda.empty_cache() failed ({reason(exc, 260)})"
    return None


def reset_memory_peaks(device: torch.device) -> None:
    """Start a new peak-memory window on a CUDA ``device`` (allocated and reserved); a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_peaks(device: torch.device) -> tuple[int | None, int | None]:
    """(peak allocated bytes, peak reserved bytes) of ``device`` since the last reset; (None, None) off CUDA.

    Allocated counts live tensors; reserved counts what the caching allocator holds from the driver,
    CUDA graphs' private pools included (a graph's activations are allocated there at capture and
    are never "allocated" again during replays), so only reserved compares graphed with eager runs.
    """
    if device.type != "cuda":
        return None, None
    return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device))


@dataclass(frozen=True)
class Precision:
    """How a run computes: the precision actually used and what that means for autocast/scaling."""

    used: str  # fp32 | tf32 | bf16 | fp16
    autocast_dtype: torch.dtype | None
    use_scaler: bool
    tf32: bool


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Map ``cfg.precision`` to what ``device`` can do, falling back honestly (recorded as ``used``).

    CPU: tf32 does not exist (-> fp32) and fp16 autocast has no fast kernels nor GradScaler use there
    (-> bf16). CUDA without bf16 support: bf16 -> fp16 with loss scaling. fp16 trains through a
    GradScaler: with a fused optimizer (SGD, Adam, AdamW on CUDA) its inf check stays on the device;
    with any other (RMSprop, an optimizer registered without ``accel=``) ``scaler.step`` reads the
    inf flag on the host, one sync per step, and fp16 cannot be graphed at all (docs/perf.md).
    """
    cuda = device.type == "cuda"
    if requested == "tf32" and not cuda:
        requested = "fp32"
    if requested == "fp16" and not cuda:
        requested = "bf16"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        requested = "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(requested)
    return Precision(used=requested, autocast_dtype=dtype, use_scaler=requested == "fp16", tf32=requested == "tf32")


def _fp32_precision_api() -> bool:
    """torch >= 2.9: per-backend ``fp32_precision`` settings; reading a legacy ``allow_tf32`` flag can
    then raise (cuDNN conv and RNN set apart through the new API), so only the new one is used."""
    cudnn = torch.backends.cudnn
    return all(hasattr(o, "fp32_precision") for o in (torch.backends.cuda.matmul, getattr(cudnn, "conv", None),
                                                        getattr(cudnn, "rnn", None)))


def _tf32_settings() -> list[tuple[str, Any, str]]:
    """(label, object, attribute) of what decides TF32 for fp32 matmuls and cuDNN, new API or legacy."""
    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    if _fp32_precision_api():
        return [("cuda.matmul.fp32_precision", cuda.matmul, "fp32_precision"),
                # torch's stub has no cudnn.conv; _fp32_precision_api() found it
                ("cudnn.conv.fp32_precision", cudnn.conv, "fp32_precision"),  # type: ignore[attr-defined]
                ("cudnn.rnn.fp32_precision", cudnn.rnn, "fp32_precision")]
    return [("cuda.matmul.allow_tf32", cuda.matmul, "allow_tf32"), ("cudnn.allow_tf32", cudnn, "allow_tf32")]


def tf32_state() -> dict[str, Any]:
    """The TF32 settings now (``{'cudnn.conv.fp32_precision': 'ieee', ...}``), read the way they are set."""
    return {label: getattr(o, a) for label, o, a in _tf32_settings()}


@contextlib.contextmanager
def numerics(prec: Precision, device: torch.device, *, autotune: bool = True) -> Iterator[None]:
    """Set TF32 (and, with ``autotune``, cuDNN autotuning) and restore the previous values afterwards.

    TF32 is on only for ``tf32``: cuDNN enables it for convolutions by default, which would make an
    'fp32' arm silently TF32 on Ampere and later. Where torch has the ``fp32_precision`` API (2.9+)
    matmul, cuDNN conv and cuDNN RNN are each set to ``'tf32'`` or ``'ieee'`` through it; older torch
    gets the legacy ``allow_tf32`` flags. cuDNN benchmark mode picks the fastest conv algorithms
    (fixed input shapes here), at the cost of bitwise run-to-run determinism on CUDA.
    """
    settings = _tf32_settings()
    new_api = settings[0][2] == "fp32_precision"
    value: Any = ("tf32" if prec.tf32 else "ieee") if new_api else prec.tf32
    old = [getattr(o, a) for _, o, a in settings]
    old_bench = torch.backends.cudnn.benchmark
    try:
        for _, o, a in settings:
            setattr(o, a, value)
        if autotune and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        for (_, o, a), v in zip(settings, old, strict=True):
            setattr(o, a, v)
        torch.backends.cudnn.benchmark = old_bench


def autocast(prec: Precision, device: torch.device, *, cache: bool = True) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a forward pass (a no-op for fp32/tf32).

    ``cache=False`` for a step a CUDA graph captures: autocast's weight-cast cache must not outlive a
    captured region (the values are the same; the cache only avoids casting a weight twice).
    """
    if prec.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=prec.autocast_dtype, cache_enabled=cache)
