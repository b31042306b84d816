"""Runs every benchmark in bench/ and writes BENCHMARKS.md with their JSON figures and the machine they ran on.

Each benchmark prints one JSON object (its figures, and a baseline ratio where it has one) as its last line of
standard output. Names on the command line (`run_all.py dns netpol`) run only those.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    memory_kb = 0
    try:
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return (f"{os.cpu_count()} cores ({model}), {memory_kb / 1024 / 1024:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def run(script: Path, timeout: float) -> dict:
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    figures: dict = {"error": f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"}
    for line in reversed(result.stdout.strip().splitlines()):
        try:
            figures = json.loads(line)
            break
        except ValueError:
            continue
    figures.setdefault("seconds", round(time.monotonic() - started, 1))
    return figures


def main() -> None:
    timeout = float(os.environ.get("PODNET_BENCH_TIMEOUT", "900"))
    chosen = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name != Path(__file__).name and (not chosen or p.stem in chosen))
    sections = [f"# podnet benchmarks\n\nRun by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
                f"Machine: {machine()}.\n"]
    for script in scripts:
        print(f"running {script.name} ...", flush=True)
        figures = run(script, timeout)
        print(json.dumps(figures), flush=True)
        sections.append(f"\n## {script.stem}\n\n```json\n{json.dumps(figures, indent=2)}\n```\n")
    out = HERE.parent / "BENCHMARKS.md"
    out.write_text("".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
