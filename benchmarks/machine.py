"""The machine and the code measured: enough to tell whether two result files are comparable."""

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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


# The instruction sets that decide CPU speed here: bf16 convolutions run about 2x faster where
# oneDNN finds AVX512-BF16 (or AMX), and everything falls back to fp32 on AVX2 alone.
CPU_KINDS = (
    ("amx_bf16", "AMX-BF16"),
    ("avx512_bf16", "AVX512-BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)


def cpu_kind(flags: str | None = None) -> str:
    """The best of CPU_KINDS this CPU has (e.g. "AVX512-BF16"), or "other"."""
    have = set((_cpuinfo("flags") if flags is None else flags).split())
    return next((kind for flag, kind in CPU_KINDS if flag in have), "other")


# Environment variables that hold torch below the instruction sets the CPU has: oneDNN's
# (convolutions, matmuls) and ATen's own vectorized kernels. With both at AVX2, a CPU with
# AVX-512 computes as an AVX2 CPU would, in its kernels if not in its clock or caches: the
# stand-in for an AVX2 machine where none is at hand.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
# The result-name suffix of the cap benchmarks/README.md gives, both variables at AVX2.
AVX2 = "avx2"


def isa_cap() -> str:
    """The ISA_CAPS set, as "NAME=value" joined by spaces; "" where none is."""
    return " ".join(f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name))


def isa_variant() -> str:
    """A result-name suffix for a capped run ("avx2" under ONEDNN_MAX_CPU_ISA=AVX2), so it
    never overwrites the uncapped result; "" where nothing is capped."""
    values = [os.environ[name].lower() for name in ISA_CAPS if os.environ.get(name)]
    return "_".join(dict.fromkeys(values))


def machine() -> dict[str, Any]:
    """Enough to tell whether two result files are comparable, load average included."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "isa_cap": isa_cap(),
        # What ATen dispatches to, after any cap: "AVX512", "AVX2", ...
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        # A busy machine is the commonest reason for numbers that don't reproduce.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def describe(m: Mapping[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    kind = f" ({m['cpu_kind']}{_capped(m)})" if "cpu_kind" in m else ""
    return (
        f"{m['cpu']}{kind}, {m['usable_cores']} usable cores ({m['physical_cores']} physical), "
        f"{m['memory_gib']} GiB{gpu}; torch {m['torch']} with {m['torch_threads']} threads; "
        f"load average {m['load_avg_1m']} at the start"
    )


def label(m: Mapping[str, Any]) -> str:
    """The machine in a few words, what tells apart results that may not share a table."""
    kind = f" ({m['cpu_kind']}{_capped(m)})" if m.get("cpu_kind") else ""
    gpu = f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"
    return f"{m['cpu']}{kind}, {m['usable_cores']} usable cores, {gpu}"


def _capped(m: Mapping[str, Any]) -> str:
    return f", capped by {m['isa_cap']}" if m.get("isa_cap") else ""


# What the benchmarks themselves write: the second of two benchmarks run in a row measures the
# same code as the first, so these changes leave the revision clean.
OUTPUTS = ("benchmarks/results", "benchmarks/RESULTS.md", "README.md")


def git_revision() -> str:
    """Short commit, with -dirty when the tree has uncommitted changes to tracked files other
    than the benchmarks' own outputs.

    $FASHION_LAB_GIT_REVISION overrides it: a copy of the tree sent to another machine may carry
    git metadata that is not the code's."""
    if rev := os.environ.get("FASHION_LAB_GIT_REVISION"):
        return rev
    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in OUTPUTS)
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def git(*args: str, timeout_s: float = 5) -> str:
    """What `git args` prints in the repo root, stripped; CalledProcessError where it fails."""
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout_s, check=True
    ).stdout.strip()
