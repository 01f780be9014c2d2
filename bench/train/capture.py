"""Warm-up and capture for the graphed engine: the CUDA calls behind one seam, and state snapshots.

:class:`CudaGraphOps` holds every CUDA-graph call (side-stream warm-up, capture on a stream of the
run's device, generator registration), so the CPU tests can substitute a stand-in that runs the
captured body directly. :class:`Snapshot` saves parameters, buffers, optimizer state and RNG states
before warm-up and restores them in place after capture (the graph holds their addresses), so the
graphed run starts exactly where the eager run starts.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["CudaGraphOps", "GraphUnsupported", "HostSync", "Snapshot"]


class GraphUnsupported(Exception):
    """This run cannot be graphed; ``str(e)`` is the reason recorded as ``engine_fallback_reason``."""


class HostSync(GraphUnsupported):
    """The step synchronises the host with the device (found in the guarded warm-up step)."""


class CudaGraphOps:
    """The CUDA calls of warm-up and capture behind one seam (the CPU tests substitute a stand-in that
    runs the body where CUDA would record it, to check the warm-up/restore/replay logic)."""

    capture_error_mode = "thread_local"  # other threads (DataLoader pinning) may call CUDA meanwhile

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise GraphUnsupported(f"CUDA graphs need a CUDA device (device is {device.type})")
        self.device = device
        # An explicit capture stream on the run's device: torch.cuda.graph's default one is a class-level
        # stream made on whichever device was current at the first capture in the process.
        self.capture_stream = torch.cuda.Stream(device)
        # capturing the augmentation's RNG needs its generator registered with the graph (torch >= 2.5)
        self.can_capture_generator = hasattr(torch.cuda.CUDAGraph, "register_generator_state")

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def side_stream(self) -> Any:
        """Run the block on a fresh side stream, ordered after and before the current stream's work."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            yield
        current.wait_stream(side)

    @contextlib.contextmanager
    def forbid_sync(self) -> Any:
        """Any host sync inside the block raises (``torch.cuda.set_sync_debug_mode('error')``).

        The last warm-up step runs under it, so a step that syncs (``.item()`` in a forward) is
        rejected before capture begins: on torch < 2.12 a capture that fails leaves the caching
        allocator believing a capture is under way, which breaks every later ``empty_cache()`` and
        capture in the process.
        """
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    def capture(self, body: Callable[[], None], generator: torch.Generator | None, pool: Any = None) -> Any:
        """A ``torch.cuda.CUDAGraph`` of ``body`` (with ``generator`` registered); ``.replay()`` runs it.

        ``pool``: another graph's ``.pool()`` to allocate from (graphs replayed one after another,
        never concurrently, may share one; the tail graph shares the full batches' pool).
        """
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        previous = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph, pool=pool, stream=self.capture_stream,
                                  capture_error_mode=self.capture_error_mode):
                body()
        except BaseException:
            # torch.cuda.graph leaves its capture stream current when capture_end raises (an invalidated
            # capture): put the caller's stream back so the eager fallback does not run on it
            torch.cuda.set_stream(previous)
            with contextlib.suppress(Exception):
                graph.reset()
            raise
        return graph

    def rng_state(self) -> torch.Tensor:
        return torch.cuda.get_rng_state(self.device)

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.cuda.set_rng_state(state, self.device)


class Snapshot:
    """Everything warm-up steps change: parameters, buffers, optimizer state and groups, default RNGs."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, ops: Any) -> None:
        seen: dict[int, torch.Tensor] = {}
        for t in itertools.chain(model.parameters(), model.buffers()):
            seen.setdefault(id(t), t)
        self.tensors = [(t, t.detach().clone()) for t in seen.values()]
        self.opt_state = {
            p: {k: (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in s.items()}
            for p, s in optimizer.state.items() if s
        }
        self.groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self.ops = ops
        self.rng_cpu = torch.get_rng_state()
        self.rng_dev = ops.rng_state()

    def _restore_rng(self) -> None:
        torch.set_rng_state(self.rng_cpu)
        self.ops.set_rng_state(self.rng_dev)

    @torch.no_grad()
    def restore_in_place(self, optimizer: torch.optim.Optimizer) -> None:
        """Values back into the same tensors (the graph holds their addresses); new state zeroed."""
        for t, saved in self.tensors:
            t.copy_(saved)
        for p, state in optimizer.state.items():
            saved_state = self.opt_state.get(p, {})
            for k, v in list(state.items()):
                if k in saved_state:
                    if torch.is_tensor(v):
                        v.copy_(saved_state[k])
                    else:
                        state[k] = copy.deepcopy(saved_state[k])
                elif torch.is_tensor(v):
                    v.zero_()  # created by the warm-up: fresh state is zeros (see the module doc)
        self._restore_rng()

    @torch.no_grad()
    def restore_all(self, optimizer: torch.optim.Optimizer) -> None:
        """Back to the pre-warm-up state entirely (for the eager fallback): values, groups, state keys."""
        for t, saved in self.tensors:
            t.copy_(saved)
        for p in list(optimizer.state):
            if p not in self.opt_state:
                del optimizer.state[p]
        for p, s in self.opt_state.items():
            optimizer.state[p] = dict(s)
        for group, saved_group in zip(optimizer.param_groups, self.groups, strict=True):
            group.update(saved_group)
        optimizer.zero_grad(set_to_none=True)
        self._restore_rng()

