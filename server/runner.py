"""One ONNX Runtime session per execution instance: providers, threads, IO binding, warm-up."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ganserve.export.metadata import ModelCard, example_inputs

log = logging.getLogger("ganserve.runner")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


TRIM_AFTER_VALUES = 1 << 20  # outputs this large are worth a malloc_trim (it costs ~1 ms)


def trim_heap() -> None:
    """Give freed C heap back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 512 * 1024


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> None:
    """Serve blocks of `size` bytes or more from mmap, always, so they go back to the system
    when freed. glibc raises its threshold (up to 32 MB) each time it frees such a block, after
    which arrays of that size come from the heap, which fragments: a server's RSS at rest
    crept up 18% over 4 rounds of 10 s of mixed calls (226 -> 266 MB, one process, 2 cores);
    with the threshold fixed it held at 192-204 MB."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, size)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_instances(provider: str, instances: int, threads: int, cores: int) -> tuple[int, int]:
    """(instances, intra-op threads each) for a model; 0 for either means "choose".

    On the CPU the cores are shared out: by default one instance per core with one thread each,
    which measured best for every load in `bench.serving` (docs/serving.md): a run on its own
    thread has no thread pool to wake, and two runs keep both cores busy. On CUDA, two
    instances (two sessions, so two CUDA streams) let one batch's copies and Python work overlap
    another's kernels; the CPU threads only serve nodes that fall back to the CPU.
    """
    if provider == CUDA:
        return instances or 2, threads or 1
    if instances and threads:
        return instances, threads
    if instances:
        return instances, max(1, cores // instances)
    if threads:
        return max(1, cores // threads), threads
    return cores, 1


def choose_providers(device: str) -> list[str]:
    """CUDA (with the CPU for the odd node) when asked or, for `auto`, when available."""
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise RuntimeError(f"--device cuda: this onnxruntime has no {CUDA} ({available})")
    if device == "cuda" or (device == "auto" and CUDA in available):
        if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from PyTorch's wheels, if present
            try:
                ort.preload_dlls()
            except Exception as exc:  # the system's own libraries may still be found
                log.warning("onnxruntime.preload_dlls failed: %s", exc)
        return [CUDA, CPU]
    return [CPU]


class Runner:
    """Runs a generator: a dict of input arrays [N, ...] → the output array [N, ...].

    One runner is one execution instance: its own session, so its own intra-op thread pool on
    the CPU and its own CUDA stream on the GPU. On the CPU, intra-op threads do not spin while
    idle unless `spinning` (measured: spinning starved the gRPC threads on 2 cores). On CUDA,
    inputs and the output go through IO binding so each run makes one copy in and one out.
    """

    def __init__(
        self, path: Path, *, device: str = "auto", threads: int = 0, spinning: bool = False
    ) -> None:
        options = ort.SessionOptions()
        self.threads = threads or cpu_cores()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3
        providers = choose_providers(device)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.card = ModelCard.from_props(self.session.get_modelmeta().custom_metadata_map)
        self.provider = self.session.get_providers()[0]
        # Translation calls vary in size: ONNX Runtime's CPU arena and memory patterns would
        # keep the largest call's memory for good (measured: +1 GB after one 2048x2048 call).
        # Without them, and with the C heap trimmed after a large run, it is given back.
        self._trim_after = self.card.kind == "translation" and self.provider != CUDA
        if self._trim_after:
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        # ONNX Runtime falls back to the CPU silently when the CUDA libraries are missing.
        if device == "cuda" and self.provider != CUDA:
            raise RuntimeError(f"{path}: --device cuda, but the session runs on {self.provider}")
        if device == "auto" and CUDA in ort.get_available_providers() and self.provider != CUDA:
            log.warning("%s: CUDA is available but the session fell back to the CPU", path)
        self.output_name = self.session.get_outputs()[0].name
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if graph_inputs != [s.name for s in self.card.inputs]:
            raise ValueError(f"{path}: graph inputs {graph_inputs} do not match its metadata")

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One batch, synchronously (call it off the event loop)."""
        if self.provider != CUDA:
            output = self.session.run([self.output_name], feeds)[0]
            if self._trim_after and output.size > TRIM_AFTER_VALUES:
                trim_heap()
            return output
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run once at each batch size so the first real call pays no set-up cost."""
        for n in batch_sizes:
            self.run(example_inputs(self.card, n))
