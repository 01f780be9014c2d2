"""The software and hardware a measurement ran on, for the records.

Every probe is best effort: a missing tool (nvidia-smi, git) or file gives None, never an error.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the bench package


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 10.0) -> str | None:
    """stdout of ``cmd`` stripped, or None if it is missing, fails, or hangs."""
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown"


def driver_version() -> str | None:
    """NVIDIA driver version from nvidia-smi (first GPU), None where there is no nvidia-smi."""
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def git_state(root: Path = _PACKAGE_PARENT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the bench package lives in; (None, None) if it is not one.

    Only a repository whose top level is the package's parent folder counts, so an installed copy
    inside some other repository (e.g. site-packages in a venv under a checkout) reports None.
    ``dirty`` means tracked files differ from the commit; untracked files (results, scratch) don't.
    """
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=root)
    if top is None or Path(top).resolve() != root.resolve():
        return None, None
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return commit, (None if status is None else bool(status))


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - an import failing for any reason means "not available"
        return None


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    cpu = cpu_model()
    commit, dirty = git_state()
    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": _version("torchvision"),
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "device_name": torch.cuda.get_device_name(torch.cuda.current_device()) if cuda else cpu,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "driver_version": driver_version() if cuda else None,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def device_name(device: str | torch.device | None) -> str:
    """The name of the hardware ``device`` computes on: the GPU that ``cuda:N`` (or ``cuda``, the
    current one) is, else the CPU model."""
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())
    except (RuntimeError, AssertionError, ValueError):  # best effort, as every probe here
        return "unknown"
    return cpu_model()


def environment(device: str | torch.device | None = None, since: CpuMark | None = None) -> dict[str, Any]:
    """Versions (python, torch, torchvision, CUDA, cuDNN, driver), hardware (device_name = the GPU of
    ``device`` when it is a CUDA device, the current GPU when none is given, else the CPU model;
    gpu_count, cpu_model, cpu_count), hostname, platform, git_commit and git_dirty, probed once per
    process (cached), plus the machine's load (:func:`host_load`): ``load_avg_1min`` and
    ``load_avg_5min`` now, and ``other_cpu_pct``, the share of all CPUs' time other processes used
    since the mark ``since`` (for a run's record: taken as its training starts; None without a mark).
    Each call returns a fresh copy.
    """
    env = dict(_environment())
    if device is not None:
        env["device_name"] = device_name(device)
    env.update(host_load(since))
    return env


# ------------------------------------------------------------------------------------- machine load
# A timing taken while other processes used at least this share of all CPUs' time (or, where that is
# unknown, with a 1-minute load average above the CPU count) is flagged as taken under load.
UNDER_LOAD_OTHER_CPU_PCT = 10.0


@dataclass(frozen=True)
class CpuMark:
    """CPU time counters at one moment: the machine's busy and total jiffies (/proc/stat, None where
    there is none) and this process's own CPU seconds (its threads, reaped children and live children)."""

    busy_ticks: int | None
    total_ticks: int | None
    own_cpu_s: float


def _proc_stat() -> tuple[int | None, int | None]:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None, None
    if not fields or fields[0] != "cpu":
        return None, None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    v += [0] * (8 - len(v))
    total = sum(v)
    return total - v[3] - v[4], total


def _own_cpu_s() -> float:
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    try:  # live children (data loader workers) count as ours too
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                ct = child.cpu_times()
                own += ct.user + ct.system
            except (psutil.Error, OSError):
                pass
    except ImportError:
        pass
    return own


def cpu_mark() -> CpuMark:
    """The counters now (see :class:`CpuMark`)."""
    busy, total = _proc_stat()
    return CpuMark(busy, total, _own_cpu_s())



def host_load(start: CpuMark | None, end: CpuMark | None = None) -> dict[str, Any]:
    """``load_avg_1min``, ``load_avg_5min`` (os.getloadavg; None where unknown) and ``other_cpu_pct``:
    the percentage of all CPUs' time between ``start`` and ``end`` (now) that processes other than this
    one and its children used, None where /proc/stat is missing or ``start`` is None."""
    end = end or cpu_mark()
    try:
        one, five, _ = os.getloadavg()
        load: dict[str, Any] = {"load_avg_1min": round(one, 2), "load_avg_5min": round(five, 2)}
    except (OSError, AttributeError):
        load = {"load_avg_1min": None, "load_avg_5min": None}
    other = None
    if start is not None and None not in (start.total_ticks, end.total_ticks, start.busy_ticks, end.busy_ticks):
        d_total = end.total_ticks - start.total_ticks  # type: ignore[operator]
        if d_total > 0:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy_s = (end.busy_ticks - start.busy_ticks) / hz  # type: ignore[operator]
            own_s = end.own_cpu_s - start.own_cpu_s
            other = round(min(100.0, max(0.0, 100.0 * (busy_s - own_s) / (d_total / hz))), 1)
    load["other_cpu_pct"] = other
    return load


def under_load(other_cpu_pct: Any, load_avg_1min: Any = None, cpu_count: Any = None) -> bool | None:
    """Whether a timing was taken under load (see :data:`UNDER_LOAD_OTHER_CPU_PCT`); None where
    nothing is known (older records lack these fields)."""
    def known(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

    if known(other_cpu_pct):
        return float(other_cpu_pct) >= UNDER_LOAD_OTHER_CPU_PCT
    if known(load_avg_1min) and known(cpu_count) and cpu_count:
        return float(load_avg_1min) > float(cpu_count)
    return None


# fp32 FLOP per cycle per core by instruction set: 2 FMA pipes x 8 fp32 lanes (256 bits) x 2 FLOP
# per fused multiply-add. AVX-512 parts that double-pump 256-bit pipes (Zen 4) or have one 512-bit
# FMA unit reach 32; Intel server cores with two 512-bit FMA units reach 64, where the fraction of
# peak shown is twice the true one.
FP32_FLOP_PER_CYCLE = (("avx512f", 32), ("fma", 32))
PEAK_ASSUMPTION = ("peak = cores used x clock x fp32 FLOP/cycle/core; FLOP/cycle from the CPU flags: "
                   "avx512f or fma -> 32 (2 FMA units x 8 fp32 lanes x 2; 64 on cores with two 512-bit "
                   "FMA units, where the fraction shown doubles the true one); the clock is lscpu's "
                   "'CPU max MHz', else /proc/cpuinfo's current 'cpu MHz'; bf16 is judged against the fp32 peak")


@functools.lru_cache(maxsize=1)
def _lscpu() -> dict[str, str]:
    out = _run(["lscpu"]) or ""
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def cpu_peak_estimate(threads: int | None = None) -> dict[str, Any]:
    """Estimated fp32 peak of the cores this process computes on (see :data:`PEAK_ASSUMPTION`).

    Keys: ``cpu_cores_used`` (torch's threads, at most the physical cores), ``cpu_clock_GHz``,
    ``cpu_fp32_flop_per_cycle_per_core``, ``cpu_peak_GFLOP_per_s_est`` (None where a part is
    unknown) and ``cpu_peak_assumption``.
    """
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    mhz: float | None = None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    if not flags:
        flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                      if line.startswith("flags")), set())
    for source in (info.get("CPU max MHz"),
                   next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("cpu MHz")), None)):
        try:
            mhz = float(source) if source else None
        except ValueError:
            mhz = None
        if mhz:
            break
    try:
        physical = int(info["Core(s) per socket"]) * int(info.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        physical = os.cpu_count() or 1
    cores = min(threads or torch.get_num_threads(), physical)
    per_cycle = next((n for flag, n in FP32_FLOP_PER_CYCLE if flag in flags), None)
    peak = cores * mhz / 1e3 * per_cycle if mhz and per_cycle else None
    return {"cpu_cores_used": cores, "cpu_clock_GHz": mhz / 1e3 if mhz else None,
            "cpu_fp32_flop_per_cycle_per_core": per_cycle, "cpu_peak_GFLOP_per_s_est": peak,
            "cpu_peak_assumption": PEAK_ASSUMPTION}
