"""What a measurement ran on: the machine, its kind (what tells results apart that may not share
a table) and the git commit of the code."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from benchmarks import ROOT


def _cpuinfo(key: str) -> str:
    """The first value of `key` in /proc/cpuinfo, or "" where there is none."""
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((x.split(":", 1)[1].strip() for x in lines if x.split(":")[0].strip() == key), "")


# The instruction sets that decide CPU speed here: bf16 convolutions run about 2x faster where
# oneDNN finds AVX512-BF16 (or AMX), and everything falls back to fp32 on AVX2 alone.
CPU_KINDS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"))
CPU_KINDS += (("avx2", "AVX2"),)


def cpu_kind() -> str:
    """The best of CPU_KINDS this CPU has (e.g. "AVX512-BF16"), or "other"."""
    have = set(_cpuinfo("flags").split())
    return next((kind for flag, kind in CPU_KINDS if flag in have), "other")


# Environment variables that hold torch below the instruction sets the CPU has: oneDNN's
# (convolutions, matmuls) and ATen's own kernels. With both at AVX2, a CPU with AVX-512 computes
# as an AVX2 CPU would, in its kernels if not in its clock or caches: the stand-in for an AVX2
# machine where none is at hand.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def isa_cap() -> str:
    """The ISA_CAPS set, as "NAME=value" joined by spaces; "" where none is."""
    return " ".join(f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name))


def isa_variant() -> str:
    """A result-name suffix for a capped run ("avx2"), so that it never overwrites the uncapped
    result; "" where nothing is capped."""
    values = [os.environ[name].lower() for name in ISA_CAPS if os.environ.get(name)]
    return "_".join(dict.fromkeys(values))


def machine() -> dict[str, Any]:
    """Enough to tell whether two results are comparable, the load average at the start too: a
    busy machine is the commonest reason for numbers that don't reproduce."""
    import torch

    return {
        "cpu": _cpuinfo("model name") or platform.processor() or "unknown",
        "cpu_kind": cpu_kind(),
        "isa_cap": isa_cap(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # what ATen dispatches to
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def kind(m: Mapping[str, Any]) -> str:
    """The kind of machine whose results share a README table: its GPU, or its CPU's kind."""
    if m.get("gpu"):
        return f"GPU ({m['gpu']})"
    return f"{m['cpu_kind']} CPU" + (" held to AVX2" if m.get("isa_cap") else "")


def label(m: Mapping[str, Any]) -> str:
    return f"{m['cpu']}, {m['usable_cores']} usable cores"


# What the benchmarks write themselves: the second of two benchmarks run in a row measures the
# same code as the first, so these leave the tree clean.
OUTPUTS = ("benchmarks/results", "benchmarks/RESULTS.md", "README.md")


def git_state() -> dict[str, Any]:
    """The commit checked out and whether tracked files other than OUTPUTS differ from it; both
    None where git cannot tell (no repository): such a result names no code."""
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("diff", "--name-only", "HEAD").splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": any(not p.startswith(OUTPUTS) for p in changed)}


def git(*args: str) -> str:
    """What `git args` prints in the repository root, stripped."""
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30, check=True
    ).stdout.strip()
