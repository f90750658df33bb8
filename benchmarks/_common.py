"""Shared helpers for the benchmark scripts: medians of repeated timings, peak memory, tables, JSON."""
from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time

import torch

RESULTS = pathlib.Path(__file__).parent / "results"


def synchronize(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, *, repeats: int = 5, warmup: int = 1, budget_s: float = 20.0, device=None) -> float:
    """Median wall time of fn() over up to `repeats` runs (fewer when one run is slow)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 1:
            break
    return statistics.median(times)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [[("-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_json(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}")
    return path


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_and_warm(fn, *, warm_repeats: int = 3) -> dict:
    """Wall and CPU seconds of the first call of fn() (cold, when this process has not run it before) and
    the median of the next `warm_repeats` calls (warm)."""
    walls, cpus = [], []
    for _ in range(1 + warm_repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    cold, warm = walls[0], statistics.median(walls[1:])
    return {"cold_s": cold, "warm_s": warm, "cold_cpu_s": cpus[0], "warm_cpu_s": statistics.median(cpus[1:]),
            "cold_over_warm": cold / warm, "cold_over_warm_cpu": cpus[0] / statistics.median(cpus[1:])}


def cold_child(script: str, argv: list[str], timeout: float = 1800.0) -> dict:
    """Run `python script --cold-child *argv` in a fresh process (its last stdout line is a JSON object,
    normally `first_and_warm`'s): the cold figures are then those a user's first call gets."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, script, "--cold-child", *argv], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])
