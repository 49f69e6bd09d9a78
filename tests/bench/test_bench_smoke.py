"""Every bench/*.py (and bench/gpu.sh) runs as documented, from the repository root, at a tiny size,
and prints its figures under the protocol (bench/_protocol.py). No timing is asserted: the figures are
parsed, their presence and their consistency are checked, never their values."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import psycopg
import pytest

from support.paths import REPO

BENCH = REPO / "bench"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"
START = re.compile(
    rf"^# protocol: (\w+), nproc (\d+), load average at start ({NUMBER}) {NUMBER} {NUMBER}", re.M
)
END = re.compile(rf"^# protocol: (\w+), load average at end ({NUMBER}) {NUMBER} {NUMBER}", re.M)
EXACT = r"max \|logit delta\| (\S+), (\d+) on the other side of thr$"
THREADS = re.compile(r"^# protocol: torch \S+, get_num_threads (\d+), get_num_interop_threads \d+, ", re.M)


def run_bench(
    *argv: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python bench/X.py ARGS`` from the repository root with the test's own environment (no extra
    path: each bench must find what it imports by itself) and ``env``; no bytecode written into the
    checkout."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
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
            "bench/bench_join.py",
            "--lines",
            "3000",
            "--frames",
            "30",
            "--workers",
            "2",
            "--rounds",
            "2",
            "--allow-noisy",
        ),
        "bench_join",
    )
    assert re.search(
        rf"^frame throughput, 2 workers: fake server to a plain client {NUMBER} frames/s", out, re.M
    )
    assert re.search(
        rf"^download only, 2 interleaved rounds \(median frames/s\): plain client {NUMBER}, "
        rf"cvat-sdk's urllib3 pool {NUMBER}, cvat-sdk {NUMBER}$",
        out,
        re.M,
    )
    assert re.search(rf"^read logs {NUMBER}s \({NUMBER} lines/s; \d+ of this job", out, re.M)
    assert re.search(rf"^join \+ lifecycle \+ calibration {NUMBER}s; peak RSS {NUMBER} MiB", out, re.M)
    assert re.search(r"^lifecycle \{.*\}; equals generated: True$", out, re.M)


QUEUE_ROW = re.compile(
    rf"^(\d+ workers?) +median +{NUMBER} jobs/min \(rounds ({NUMBER} in {NUMBER} s(?:, )?)+\); "
    r"every job validated exactly once: (.*)$",
    re.M,
)


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_queue_interleaves_worker_counts_and_checks_every_job_once():
    """As documented: its own throwaway PostgreSQL cluster, the sandbox CVAT, ``ropewatch worker``
    processes."""
    out = figures(
        run_bench(
            "bench/bench_queue.py",
            *("--jobs", "4", "--frames", "2", "--workers", "1,2", "--rounds", "2", "--allow-noisy"),
        ),
        "bench_queue",
    )
    assert re.search(
        r"^sandbox CVAT: 4 jobs of 2 frames \(task 11\); PostgreSQL: a throwaway cluster", out, re.M
    )
    assert re.search(r"^rounds: 1, 2, 1, 2 workers; a fresh database each$", out, re.M)
    rows = {m.group(1): (m.group(0), m.group(3)) for m in QUEUE_ROW.finditer(out)}
    assert list(rows) == ["1 worker", "2 workers"]
    for line, once in rows.values():
        assert once == "yes" and line.count(" s, ") == 1, line  # two rounds each
    assert re.search(rf"^# ratio jobs/min vs 1 worker: 2 workers {NUMBER}x$", out, re.M)


def test_bench_queue_on_a_given_server(postgres_server):
    out = figures(
        run_bench(
            "bench/bench_queue.py",
            *("--jobs", "2", "--frames", "1", "--workers", "2", "--rounds", "1", "--allow-noisy"),
            *("--db", postgres_server),
        ),
        "bench_queue",
    )
    assert "PostgreSQL: --db server" in out
    assert [(m.group(1), m.group(3)) for m in QUEUE_ROW.finditer(out)] == [("2 workers", "yes")]
    with psycopg.connect(f"{postgres_server}/postgres") as conn:  # each round's database was dropped
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_queue_%'").fetchall()
    assert left == []


def test_bench_queue_names_what_is_not_exactly_once():
    bench = bench_module("bench_queue")
    first = bench.FIRST_JOB
    done = bench.Round(
        2, 6.0, Counter({"succeeded": 3}), Counter({first: 1, first + 1: 1, first + 2: 1}), (0, 0)
    )
    assert done.problems(3) == [] and done.jobs_per_min == 30.0
    bad = bench.Round(
        2, 6.0, Counter({"succeeded": 2, "failed": 1}), Counter({first: 2, first + 7: 1}), (0, -15)
    )
    assert bad.problems(3) == [
        "tasks {'succeeded': 2, 'failed': 1}",
        "2 job(s) never stored",
        "1 job(s) stored more than once",
        "1 unknown job(s) stored",
        "worker exit codes [0, -15]",
    ]


def test_bench_scan_counts_the_projects_requests_in_the_server_log():
    bench = bench_module("bench_scan")
    project = bench.Project(7, "p", frozenset({41, 42}), None)
    lines = [
        '[t] INFO django.server: "GET /api/jobs?page_size=500&project_id=7&type=annotation HTTP/1.1" 200 9',
        '[t] INFO django.server: "GET /api/jobs?page_size=500&project_id=70 HTTP/1.1" 200 9',  # another
        '[t] INFO django.server: "GET /api/jobs/41/data/meta HTTP/1.1" 200 9',
        '[t] INFO django.server: "GET /api/jobs/42/data/meta HTTP/1.1" 200 9',
        '[t] INFO django.server: "GET /api/jobs/43/data/meta HTTP/1.1" 200 9',  # not the project's
        '[t] INFO django.server: "GET /api/jobs/42/annotations HTTP/1.1" 200 9',
        '[t] INFO django.server: "GET /api/server/about HTTP/1.1" 200 9',
    ]
    assert bench.count_requests(lines, project) == Counter({"data/meta": 2, "list": 1, "annotations": 1})


def test_bench_scan_refuses_in_one_line_without_a_server():
    proc = run_bench(
        "bench/bench_scan.py", "--url", "http://127.0.0.1:9", "--allow-noisy", env={"CVAT_PASSWORD": "x"}
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr
        == "bench_scan: not run: no CVAT answers at http://127.0.0.1:9 (--url, CVAT_URL, or start the tier)\n"
    )


def scan_env(real_cvat) -> dict[str, str]:
    return {"CVAT_URL": real_cvat.url, "CVAT_USER": real_cvat.user, "CVAT_PASSWORD": real_cvat.password}


def projects_named(real_cvat, name: str) -> list[dict]:
    found = real_cvat.rest.get(f"/api/projects?search={name}&page_size=100")["results"]
    return [p for p in found if p["name"] == name]


@pytest.mark.slow
def test_bench_scan_on_the_real_tier_reuses_then_deletes_its_project(real_cvat):
    """Tiny: 3 one-frame jobs. The first run keeps its project, the second reuses it and deletes it."""
    from support.real_cvat import tier_env

    name = real_cvat.name("bench-scan")
    args = ("bench/bench_scan.py", "--jobs", "3", "--name", name, "--allow-noisy")
    try:
        kept = figures(run_bench(*args, "--rounds", "1", "--keep", env=scan_env(real_cvat)), "bench_scan")
        assert re.search(
            rf"^CVAT 2\.23\.1 at .*: project \d+ '{name}', 3 jobs of 1 frame \(created in ", kept, re.M
        )
        assert f"project kept: '{name}'" in kept and len(projects_named(real_cvat, name)) == 1
        out = figures(run_bench(*args, "--rounds", "2", env=scan_env(real_cvat)), "bench_scan")
    finally:
        for project in projects_named(real_cvat, name):
            real_cvat.rest.request("DELETE", f"/api/projects/{project['id']}")
    assert re.search(r", 3 jobs of 1 frame \(reused\)$", out, re.M)
    assert re.search(rf"^fill: validate-job validated 3 of 3 jobs in {NUMBER} s \(exit 0\)", out, re.M)
    counted = tier_env().get("CVAT_URL", "").rstrip("/") == real_cvat.url.rstrip("/")
    requests = (
        "requests per scan for the project's jobs: list 1, data/meta 3, annotations 0"
        if counted  # the tier's request log: one listing page, one data/meta per job, nothing read
        else "requests not counted (no server log; --server-log PATH)"
    )
    for config in ("--frame-workers 1", "--frame-workers 8"):
        assert re.search(
            rf"^{config} +median +{NUMBER} s per scan \(rounds {NUMBER}, {NUMBER}\); listed 3, skipped 3; "
            rf"{re.escape(requests)}$",
            out,
            re.M,
        ), config
    assert re.search(
        rf"^# ratio seconds per scan vs --frame-workers 1: --frame-workers 8 {NUMBER}x$", out, re.M
    )
    assert f"project deleted: '{name}'" in out and projects_named(real_cvat, name) == []
    gone = run_bench(*args, "--cleanup", env=scan_env(real_cvat))
    assert gone.returncode == 0 and gone.stdout == f"bench_scan: project '{name}' not found\n"


TINY_EXPERT = ("--frame-size", "160x96", "--expert-depth", "1")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_nuclio_interleaves_the_thread_settings():
    out = figures(
        run_bench(
            "bench/bench_nuclio.py",
            *(
                "--workers",
                "1",
                "--requests",
                "2",
                "--img-size",
                "64",
                "48",
                "--rounds",
                "2",
                "--allow-noisy",
            ),
        ),
        "bench_nuclio",
        torch_used=True,
    )
    assert re.search(r"^workers=1 requests=2 img_size=64x48$", out, re.M)
    cores = os.cpu_count()
    for label, threads in (
        (rf"TORCH_THREADS={cores} \(torch's default\)", cores),
        (r"NUM_WORKERS=1 \(cores / workers\)", None),
    ):
        line = re.search(
            rf"^{label} +({NUMBER}) req/s \(median of ({NUMBER}), ({NUMBER})\)  "
            r"statuses \[200\]  torch_threads \['(\d+)'\]$",
            out,
            re.M,
        )
        assert line, label
        if threads is not None:
            assert int(line.group(4)) == threads  # the setting reached the workers
    assert re.search(
        rf"^# ratio requests/s vs TORCH_THREADS={cores} \(torch's default\): "
        rf"NUM_WORKERS=1 \(cores / workers\) {NUMBER}x$",
        out,
        re.M,
    )


def expert_rows(out: str) -> dict[str, str]:
    return dict(re.findall(rf"^ +(\S+) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}  (.+)$", out, re.M))


def test_bench_expert_options_and_the_exactness_verdict():
    variants = "eager,channels-last,sdpa-math,sdpa-efficient,no-fused-attn,bf16"
    out = figures(
        run_bench(
            "bench/bench_expert.py",
            *("--frames", "3", "--persons", "2", "--warmup", "1", *TINY_EXPERT, "--variants", variants),
            "--allow-noisy",
        ),
        "bench_expert",
        torch_used=True,
    )
    # no efficient-attention kernel on CPU: skipped with its reason, the others still run
    assert re.search(r"^# skipped sdpa-efficient: not available on cpu: No viable backend", out, re.M)
    rows = expert_rows(out)
    assert list(rows) == ["eager", "channels-last", "sdpa-math", "no-fused-attn", "bf16"]
    assert rows["eager"] == "reference"
    for name in ("channels-last", "sdpa-math", "no-fused-attn", "bf16"):
        assert rows[name].startswith("DROP (") and "6 persons < 500 (no verdict on identity)" in rows[name]
        e = re.search(
            rf"^# exactness {name} vs eager: 6 persons \(3 correct, 3 wrong in eager\), {EXACT}",
            out,
            re.M,
        )
        assert e, name
    bf16 = re.search(r"^# exactness bf16 vs eager: .* max \|logit delta\| (\S+), ", out, re.M)
    assert bf16 and float(bf16.group(1)) > 1e-4 and "> 0.0001" in rows["bf16"]  # autocast is not exact


@pytest.mark.slow
def test_bench_expert_compile():
    out = figures(
        run_bench(
            "bench/bench_expert.py",
            *(
                "--frames",
                "2",
                "--persons",
                "2",
                "--warmup",
                "1",
                *TINY_EXPERT,
                "--variants",
                "eager,compile",
            ),
            "--allow-noisy",
        ),
        "bench_expert",
        torch_used=True,
    )
    assert re.search(r"^# warm-up compile: [0-9.]+ s \(includes compiling\)$", out, re.M)
    assert expert_rows(out)["compile"].startswith("DROP (")
    e = re.search(
        r"^# exactness compile vs eager: 4 persons .* max \|logit delta\| (\S+), 0 on the other side",
        out,
        re.M,
    )
    assert e and float(e.group(1)) < 1e-3  # inductor reorders float sums: close, not bit-identical


@pytest.mark.slow
def test_gpu_sh_dry_run_on_cpu(tmp_path):
    out_file = tmp_path / "gpu.txt"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "DEVICE": "cpu", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bench/gpu.sh", "--dry-run", "--out", str(out_file), "--allow-noisy"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out_file.read_text()
    assert text == proc.stdout  # every figure printed is in the one file
    assert not list(tmp_path.glob("gpu.txt.tmp.*"))
    assert text.startswith("# gpu.sh: device cpu, dry run 1, ")
    assert "# gpu.sh: fp16 skipped on cpu: " in text and " fp16" not in text.split("fp16 skipped on cpu")[1]
    function = text[text.index("# gpu.sh: function benchmark") : text.index("# gpu.sh: expert pass")]
    expert = text[text.index("# gpu.sh: expert pass") :]
    figures(subprocess.CompletedProcess([], 0, function, ""), "bench_function", torch_used=True)
    figures(subprocess.CompletedProcess([], 0, expert, ""), "bench_expert", torch_used=True)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn@64/96"
    for persons in (1, 2):
        for dtype in ("fp32", "bf16"):  # batch 1: one frame per request; p50/p95 and frames/s per dtype
            assert re.search(rf"^ +{persons} +{name} {dtype} +total +{NUMBER} +{NUMBER}$", function, re.M)
            assert re.search(rf"^ +{persons} +{name} {dtype} +frames/s +{NUMBER}$", function, re.M)
        assert re.search(
            rf"^# exactness {name} bf16 vs {name} fp32: {2 * persons} persons .* {EXACT}",
            function,
            re.M,
        )
    assert list(expert_rows(expert)) == ["eager", "bf16"]
    assert re.search(r"^# exactness bf16 vs eager: 6 persons ", expert, re.M)
    assert re.search(r"^# gpu.sh: done in \d+ s$", text, re.M)


def test_gpu_sh_refuses_without_out_and_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    no_out = subprocess.run(["bench/gpu.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True)
    assert no_out.returncode == 2 and no_out.stderr == "gpu.sh: --out FILE is required\n"
    env["CUDA_VISIBLE_DEVICES"] = ""  # whatever this machine has, torch then sees no CUDA device
    no_gpu = subprocess.run(
        ["bench/gpu.sh", "--out", str(tmp_path / "x.txt")], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert no_gpu.returncode == 2 and no_gpu.stderr.startswith("gpu.sh: DEVICE=cuda but torch sees no CUDA")
    assert not list(tmp_path.iterdir())


def bench_module(name: str):
    """A bench module imported as its script sees its siblings (bench/ first on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_interleaved_runs_every_configuration_in_turn():
    protocol = bench_module("_protocol")
    calls: list[tuple[str, int]] = []
    out = protocol.interleaved(
        {name: (lambda x, name=name: calls.append((name, x)) or f"{name}{x}") for name in "ABC"}, [0, 1]
    )
    assert calls == [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("C", 1)]  # A B C A B C
    assert out == {"A": ["A0", "A1"], "B": ["B0", "B1"], "C": ["C0", "C1"]}
    assert (
        protocol.ratio_line("frames/s", {"A": 2.0, "B": 3.0, "C": 1.0})
        == "# ratio frames/s vs A: B 1.50x, C 0.50x"
    )
    assert protocol.ratio_line("s", {"A": 2.0, "B": 4.0}, higher_is_better=False) == "# ratio s vs A: B 0.50x"


def test_exactness_against_a_brute_force_count():
    protocol = bench_module("_protocol")
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 600)
    other = ref + rng.normal(0, 1e-3, 600)
    ref_side, other_side = ref >= 0.1, other >= 0.1
    other_side[:3] = ~ref_side[:3]  # three persons certainly on the other side
    e = protocol.exactness(ref, other, ref_side, other_side)
    flips = sum(a != b for a, b in zip(ref_side, other_side))
    assert flips >= 3 and (e.persons, e.flips, e.reference_correct) == (600, flips, sum(ref_side))
    assert e.max_abs_delta == max(abs(a - b) for a, b in zip(ref, other))
    verdict = bench_module("bench_expert").verdict
    assert (
        verdict(1.5, e) == f"DROP (logit delta {e.max_abs_delta:.3g} > 0.0001; {flips} decision(s) changed)"
    )
    same = protocol.exactness(ref, ref + 1e-6, ref >= 0.1, ref >= 0.1)
    assert verdict(1.2, same) == "KEEP"
    assert verdict(1.19, same) == "DROP (1.19x < 1.2x)"
    few = protocol.exactness(ref[:499], ref[:499], ref[:499] >= 0, ref[:499] >= 0)
    assert verdict(2.0, few) == "DROP (499 persons < 500 (no verdict on identity))"
