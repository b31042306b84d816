"""Runs every benchmark in bench/ and writes BENCHMARKS.md with their JSON figures and the machine they ran on.

Each benchmark prints its result as one JSON object on the last line of its standard output. A benchmark that
exits non-zero, or whose last line is not such an object, has failed: its error goes into BENCHMARKS.md and
run_all exits non-zero, so a result that cannot be read never passes for a run. Names on the command line
(`run_all.py dns netpol`) run only those.
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


def read_result(returncode: int, stdout: str, stderr: str) -> tuple[dict, bool]:
    """A benchmark's figures from its exit code and output, and whether it succeeded."""
    if returncode != 0:
        return {"error": f"exit {returncode}: {stderr.strip().splitlines()[-1:]}"}, False
    lines = stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    try:
        figures = json.loads(last)
    except ValueError:
        figures = None
    if not isinstance(figures, dict):
        return {"error": f"the last line of output is not one JSON object: {last[:200]!r}"}, False
    return figures, True


def run(script: Path, timeout: float) -> tuple[dict, bool]:
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}, False
    figures, ok = read_result(result.returncode, result.stdout, result.stderr)
    figures.setdefault("seconds", round(time.monotonic() - started, 1))
    return figures, ok


def main(argv: list[str], bench_dir: Path = HERE, out: Path = HERE.parent / "BENCHMARKS.md") -> int:
    timeout = float(os.environ.get("PODNET_BENCH_TIMEOUT", "900"))
    chosen = set(argv)
    scripts = sorted(p for p in bench_dir.glob("*.py")
                     if p.name != Path(__file__).name and (not chosen or p.stem in chosen))
    unknown = chosen - {p.stem for p in scripts}
    if unknown:
        print(f"error: no benchmark named {', '.join(sorted(unknown))} in {bench_dir}", file=sys.stderr)
        return 2
    sections = [f"# podnet benchmarks\n\nRun by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
                f"Machine: {machine()}.\n"]
    failed = []
    for script in scripts:
        print(f"running {script.name} ...", flush=True)
        figures, ok = run(script, timeout)
        print(json.dumps(figures), flush=True)
        sections.append(f"\n## {script.stem}\n\n```json\n{json.dumps(figures, indent=2)}\n```\n")
        if not ok:
            failed.append(script.stem)
    out.write_text("".join(sections))
    print(f"wrote {out}")
    if failed:
        print(f"error: no result from {', '.join(failed)} (see {out.name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
