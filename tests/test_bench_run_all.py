"""bench/run_all.py records what each benchmark printed, and exits non-zero when a result cannot be read."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_bench(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def test_one_json_line_is_recorded(run_all, tmp_path):
    write_bench(tmp_path, "good", """
        import json, sys
        print("warming up")
        print("progress", file=sys.stderr)
        print(json.dumps({"qps": 1234}))
    """)
    out = tmp_path / "BENCHMARKS.md"
    assert run_all.main([], bench_dir=tmp_path, out=out) == 0
    assert '"qps": 1234' in out.read_text()


@pytest.mark.parametrize("body, error", [
    ('import json\nprint(json.dumps({"qps": 1}, indent=2))\n', "not one JSON object"),
    ("print('done')\n", "not one JSON object"),
    ("print('[1, 2]')\n", "not one JSON object"),
    ("", "not one JSON object"),
    ("import sys\nsys.exit('needs a tool that is missing')\n", "needs a tool that is missing"),
])
def test_an_unreadable_result_fails_the_run(run_all, tmp_path, capsys, body, error):
    write_bench(tmp_path, "good", 'print(\'{"qps": 1}\')\n')
    write_bench(tmp_path, "bad", body)
    out = tmp_path / "BENCHMARKS.md"
    assert run_all.main([], bench_dir=tmp_path, out=out) == 1
    assert "no result from bad" in capsys.readouterr().err
    text = out.read_text()
    assert error in text and '"qps": 1' in text


def test_an_unknown_benchmark_name_is_an_error(run_all, tmp_path, capsys):
    write_bench(tmp_path, "dns", 'print(\'{"qps": 1}\')\n')
    assert run_all.main(["dsn"], bench_dir=tmp_path, out=tmp_path / "BENCHMARKS.md") == 2
    assert "no benchmark named dsn" in capsys.readouterr().err

