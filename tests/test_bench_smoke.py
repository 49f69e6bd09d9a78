"""Every bench/*.py (and bench/gpu.sh) runs as documented, from the repository root, at a tiny size,
and prints its figures under the protocol (bench/_protocol.py). No timing is asserted: the figures are
parsed, their presence and their consistency are checked, never their values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"
START = re.compile(
    rf"^# protocol: (\w+), nproc (\d+), load average at start ({NUMBER}) {NUMBER} {NUMBER}", re.M
)
END = re.compile(rf"^# protocol: (\w+), load average at end ({NUMBER}) {NUMBER} {NUMBER}", re.M)
THREADS = re.compile(r"^# protocol: torch \S+, get_num_threads (\d+), get_num_interop_threads \d+, ", re.M)


def run_bench(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python bench/X.py ARGS`` from the repository root with the test's own environment (no extra
    path: each bench must find what it imports by itself); no bytecode written into the checkout."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def figures(proc: subprocess.CompletedProcess[str], name: str, torch_used: bool = False) -> str:
    """The bench's stdout after checking the protocol lines: nproc and load at start and end, the torch
    setup where torch is used, and the NOISY mark exactly when the load it printed is above 1.5."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    start = START.search(out)
    assert start and start.group(1) == name and int(start.group(2)) == os.cpu_count(), out[:500]
    load = float(start.group(3))
    noisy = re.search(r"^# NOISY: 1-minute load ([0-9.]+) > 1.5 at start", out, re.M)
    assert bool(noisy) == (load > 1.5), out[:500]
    if noisy:
        assert float(noisy.group(1)) == load
    end = END.search(out)
    assert end and end.group(1) == name and end.start() > start.start()
    assert ("NOISY: 1-minute load above 1.5 at the end" in out[end.start() :]) == (float(end.group(2)) > 1.5)
    threads = THREADS.search(out)
    assert bool(threads) == torch_used, out[:800]
    return out


def test_a_loaded_machine_is_refused_in_one_line_or_marked_noisy():
    refused = run_bench("bench/bench_validate.py", "--frames", "5", "--repeat", "1", "--max-load", "-1")
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("bench_validate: not run: 1-minute load ") and "--allow-noisy" in line
    noisy = run_bench(
        "bench/bench_validate.py", "--frames", "5", "--repeat", "1", "--max-load", "-1", "--allow-noisy"
    )
    assert noisy.returncode == 0 and re.search(
        r"^# NOISY: 1-minute load [0-9.]+ > -1 at start", noisy.stdout, re.M
    )
    assert "NOISY: 1-minute load above -1 at the end" in noisy.stdout


def test_bench_validate():
    out = figures(
        run_bench(
            "bench/bench_validate.py", "--frames", "40", "--persons", "3", "--repeat", "2", "--allow-noisy"
        ),
        "bench_validate",
    )
    job = re.search(r"^job: 40 frames, (\d+) boxes \((\d+) auto/semi-auto, (\d+) manual\)", out, re.M)
    assert job and int(job.group(1)) == int(job.group(2)) + int(job.group(3)) > 0
    for name in ("ropewatch split+match", "faster-coco-eval to-COCO", "pycocotools COCOeval"):
        assert re.search(
            rf"^{re.escape(name)}.*: median +{NUMBER} s, best +{NUMBER} s \(2 interleaved rounds\), peak",
            out,
            re.M,
        ), name
    ap = re.search(rf"AP@0.5: faster-coco-eval ({NUMBER}), pycocotools ({NUMBER})", out)
    assert ap and ap.group(1) == ap.group(2)  # the same boxes, the same AP to 6 decimals
    assert re.search(rf"ratio faster-coco-eval / ropewatch: {NUMBER}x time", out)
    assert len(re.findall(rf"^ +\d+ frames +\d+ boxes: +{NUMBER} s", out, re.M)) == 3  # 10, 20, 40 frames


def test_bench_history():
    out = figures(
        run_bench("bench/bench_history.py", "--jobs", "5", "--frames", "20", "--allow-noisy"), "bench_history"
    )
    assert re.search(r"^report: 20 frames, \d+ boxes, report.json", out, re.M)
    now = re.search(rf"^this release: +({NUMBER}) MiB per 1,000 jobs", out, re.M)
    old = re.search(rf"^release 0.1 : +({NUMBER}) MiB per 1,000 jobs .* ({NUMBER})x this release", out, re.M)
    assert now and old


def test_bench_dashboard():
    out = figures(
        run_bench("bench/bench_dashboard.py", "--runs", "30", "--repeat", "1", "--allow-noisy"),
        "bench_dashboard",
    )
    assert re.search(r"^filled 30 runs \(5 model versions\)", out, re.M)
    rows = re.findall(rf"^\| (.+) \(`(/[^`]*)`\) \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \|$", out, re.M)
    assert len(rows) == 9 and rows[-1][1] == "/runs/15"


def test_bench_join_imports_its_generator_without_pythonpath():
    out = figures(
        run_bench(
            "bench/bench_join.py", "--lines", "3000", "--frames", "30", "--workers", "2", "--allow-noisy"
        ),
        "bench_join",
    )
    assert re.search(
        rf"^frame throughput, 2 workers: fake server to a plain client {NUMBER} frames/s", out, re.M
    )
    assert re.search(rf"^read logs {NUMBER}s \({NUMBER} lines/s; \d+ of this job", out, re.M)
    assert re.search(rf"^join \+ lifecycle \+ calibration {NUMBER}s; peak RSS {NUMBER} MiB", out, re.M)
    assert re.search(r"^lifecycle \{.*\}; equals generated: True$", out, re.M)


TINY_EXPERT = ("--frame-size", "160x96", "--expert-depth", "1")


def test_bench_function_detector_sizes_interleaved():
    out = figures(
        run_bench(
            "bench/bench_function.py",
            *("--frames", "2", "--persons", "1,2", *TINY_EXPERT),
            *("--detector-arch", "fasterrcnn_mobilenet_v3_large_320_fpn,ssdlite320_mobilenet_v3_large"),
            *("--detector-min-size", "default,64", "--detector-max-size", "default,96", "--allow-noisy"),
        ),
        "bench_function",
        torch_used=True,
    )
    names = [
        "fasterrcnn_mobilenet_v3_large_320_fpn fp32",
        "fasterrcnn_mobilenet_v3_large_320_fpn@64/96 fp32",
        "ssdlite320_mobilenet_v3_large fp32",  # one fixed size: run once
    ]
    assert (
        "fasterrcnn_mobilenet_v3_large_320_fpn fp32 (sizes 320/640); "
        "fasterrcnn_mobilenet_v3_large_320_fpn@64/96 fp32 (sizes 64/96); "
        "ssdlite320_mobilenet_v3_large fp32 (sizes 320/320)"
    ) in out
    for persons in (1, 2):
        for name in names:
            for stage in ("decode", "detect", "classify", "total"):
                assert re.search(rf"^ +{persons} +{re.escape(name)} +{stage} +{NUMBER} +{NUMBER}$", out, re.M)
            assert re.search(rf"^ +{persons} +{re.escape(name)} +frames/s +{NUMBER}$", out, re.M)
        ratio = re.search(
            rf"^# ratio frames/s, {persons} person\(s\) vs {re.escape(names[0])}: (.*)$", out, re.M
        )
        assert ratio and re.fullmatch(
            rf"{re.escape(names[1])} {NUMBER}x, {re.escape(names[2])} {NUMBER}x", ratio.group(1)
        )
        for name in names[
            1:
        ]:  # the same boxes reach the same expert: identical decisions, whatever detector ran
            assert re.search(
                rf"^# exactness {re.escape(name)} vs {re.escape(names[0])}: {2 * persons} persons .*"
                r"max \|logit delta\| 0, 0 on the other side of thr$",
                out,
                re.M,
            )


def test_bench_cascade_interleaves_expert_and_cascade():
    out = figures(
        run_bench(
            "bench/bench_cascade.py",
            *("--frames", "2", "--persons", "1,2", "--shares", "0.5,1.0", *TINY_EXPERT),
            *("--detector-arch", "fasterrcnn_mobilenet_v3_large_320_fpn", "--detector-min-size", "64"),
            *(
                "--detector-max-size",
                "96",
                "--filter-model",
                "test_resnet",
                "--filter-size",
                "32",
                "--allow-noisy",
            ),
        ),
        "bench_cascade",
        torch_used=True,
    )
    assert "detector fasterrcnn_mobilenet_v3_large_320_fpn (sizes 64/96)" in out
    # p50, p95, frames/s, x wall, CPU s/frame, x CPU, expert passes/frame, by filter %, then the stage split
    row = "".join(rf" +({NUMBER})" for _ in range(7)) + r" +(\d+)%" + rf" +{NUMBER}" * 3 + "$"
    for persons in (1, 2):
        base = re.search(rf"^ +{persons} +expert only{row}", out, re.M)
        assert base and float(base.group(4)) == 1.0 and float(base.group(6)) == 1.0 and base.group(8) == "0"
        assert float(base.group(7)) == 1.0  # one expert pass per frame
        full = re.search(rf"^ +{persons} +cascade 100%{row}", out, re.M)
        assert full and float(full.group(7)) == 0.0 and full.group(8) == "100"  # the filter decided all
        assert re.search(rf"^ +{persons} +cascade 50%{row}", out, re.M)
    for n in (1, 5):
        assert re.search(
            rf"^# filter cost, {n} person\(s\): {NUMBER} ms per frame, {NUMBER} ms per person", out, re.M
        )
