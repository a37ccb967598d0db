"""`ComputeProvider.assess_capabilities()`: the same facts the worker reports.

The worker binary's `aitbc-worker assess` is the source (GPU name and memory, the CUDA version
its driver supports, measured GEMM throughput and the performance score on one scale for GPUs
and CPUs, the concurrent jobs it offers, the job kinds it runs). The binary is
`AITBC_WORKER_BIN`, else `aitbc-worker` on PATH, else beside `AITBC_BIN`. Without it, the SDK
reads what nvidia-smi or the OS says and measures nothing (`performance_score` is None).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .errors import AitbcError
from .home import home_dir
from .models import Capabilities

ASSESS_TIMEOUT_S = 120.0
NVIDIA_SMI_TIMEOUT_S = 10.0
# The worker's figures, as worker/src/assess.rs defines them: GPU memory per concurrent job slot
# and the most slots a worker offers; the job kinds every backend runs.
JOB_SLOT_GIB = 16
CONCURRENT_JOBS_MAX = 8
BUILTIN_KINDS = ["vector_add", "reduction", "gemm"]
# The CUDA API version the worker is built against (cudarc's `cuda-12040` feature): a listing's
# `cuda_version` when neither the caller nor a driver says another.
WORKER_CUDA_VERSION = "12.4"


def worker_binary() -> str | None:
    env = os.environ.get("AITBC_WORKER_BIN")
    if env:
        return env
    found = shutil.which("aitbc-worker")
    if found:
        return found
    cli = os.environ.get("AITBC_BIN")
    if cli:
        beside = Path(cli).with_name("aitbc-worker")
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return None


# The model catalog of `aitbc models pull` (inference/src/pull.rs: CATALOG): the file each
# model is saved as in `<home>/models`, by model name.
CATALOG_FILES = {"smollm2:135m": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def local_models(home: str | os.PathLike[str] | None = None) -> list[str]:
    """Models this machine can serve: the catalog's models fetched into `<home>/models` (what
    `aitbc up` loads), and the `[[models]]` of the SDK's worker config (host_specialized_model)."""
    from .worker import WorkerConfig

    root = home_dir(home) / "models"
    names = [name for name, file in CATALOG_FILES.items() if (root / file).is_file()]
    for entry in WorkerConfig.load(home_dir(home)).models:
        if entry["name"] not in names:
            names.append(entry["name"])
    return names


def _from_worker(binary: str) -> Capabilities:
    try:
        done = subprocess.run([binary, "assess"], capture_output=True, text=True, timeout=ASSESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AitbcError(f"{binary} assess: {e}") from e
    if done.returncode != 0:
        raise AitbcError(f"{binary} assess failed: {done.stderr.strip()[:300]}")
    data = json.loads(done.stdout)
    gpu = data.get("gpu") or {}
    cpu = data.get("cpu") or {}
    return Capabilities(
        gpu_memory=int(gpu.get("memory_gib", 0)),
        supported_models=[],
        performance_score=float(data["performance_score"]),
        max_concurrent_jobs=int(data["max_concurrent_jobs"]),
        backend=str(data["backend"]),
        gpu_name=gpu.get("name"),
        cuda_version=gpu.get("cuda_driver_version"),
        cpu_cores=cpu.get("cores"),
        kinds=list(data.get("kinds", BUILTIN_KINDS)),
        source=f"{binary} assess",
        raw=data,
    )


def _nvidia_smi() -> tuple[str, int, str | None] | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        done = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return None
        name, mib = [s.strip() for s in done.stdout.strip().splitlines()[0].split(",")[:2]]
        header = subprocess.run([smi], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False).stdout
        cuda = None
        if "CUDA Version:" in header:
            cuda = header.split("CUDA Version:")[1].split()[0]
        return name, int(float(mib)) // 1024, cuda
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def assess(home: str | os.PathLike[str] | None = None) -> Capabilities:
    models = local_models(home)
    binary = worker_binary()
    if binary:
        caps = _from_worker(binary)
        caps.supported_models = models
        return caps
    smi = _nvidia_smi()
    if smi:
        name, gib, cuda = smi
        slots = max(1, min(CONCURRENT_JOBS_MAX, gib // JOB_SLOT_GIB))
        return Capabilities(gib, models, None, slots, "cuda", gpu_name=name, cuda_version=cuda, kinds=BUILTIN_KINDS + ["kernel"], source="nvidia-smi")
    # The worker's CPU backend: one job at a time, using every core.
    return Capabilities(0, models, None, 1, "cpu", cpu_cores=os.cpu_count(), kinds=list(BUILTIN_KINDS), source="os")
