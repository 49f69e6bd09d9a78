"""CLI edges of issue 11 (item 10, 11): each answers one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
import torch

from ropewatch_core.model.checkpoint import file_sha256, save_checkpoint
from ropewatch_validator.cli.main import main
from ropewatch_validator.cli.recalibrate import RecalibrationError, recalibrate
from ropewatch_validator.ops.history import HistoryError, open_store
from support.output import stderr_line
from support.reports import traced_report


def test_recalibrate_from_a_file_that_is_not_a_report_names_it(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "new.pt"
    assert (
        main(["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", "/etc/passwd", "-o", str(out)])
        == 2
    )
    assert stderr_line(capsys) == (
        "ropewatch checkpoint recalibrate: --from /etc/passwd: not a JSON report.json "
        "(Expecting value: line 1 column 1 (char 0))"
    )
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert (
        main(["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", str(listed), "-o", str(out)]) == 2
    )
    assert stderr_line(capsys).endswith(f"--from {listed}: not a report.json (a JSON list)")
    assert (
        main(["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", str(tmp_path), "-o", str(out)])
        == 2
    )
    assert stderr_line(capsys).endswith(f"--from {tmp_path}: cannot read (Is a directory)")
    assert not out.exists()


@pytest.mark.parametrize("command", ["demo", "recalibrate"])
def test_an_unwritable_output_is_one_line(tiny_checkpoint, tmp_path, capsys, command):
    if command == "demo":
        argv = ["checkpoint", "demo", "/proc/x.pt", "--img-size", "64", "48"]
    else:
        report = tmp_path / "r.json"
        z = np.r_[np.linspace(-3, 1, 50), np.linspace(-1, 3, 50)]
        y = np.r_[np.zeros(50, int), np.ones(50, int)]
        report.write_text(traced_report(z, y, ["tiny-v1"]).to_json())
        argv = ["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", str(report), "-o", "/proc/x.pt"]
    assert main(argv) == 2
    line = stderr_line(capsys)
    assert line.startswith(f"ropewatch checkpoint {command}: cannot write /proc/x.pt: ")


def _traced(versions):
    z = np.r_[np.linspace(-3, 1, 50), np.linspace(-1, 3, 50)]
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    return traced_report(z, y, versions)


def test_recalibrate_checks_the_version_of_an_unversioned_checkpoint(tiny_checkpoint_dict, tmp_path, capsys):
    """Without ``version`` the function logs ``sha256:<12 hex of the file>``: that is what must match."""
    unversioned = {k: v for k, v in tiny_checkpoint_dict.items() if k != "version"}
    path = tmp_path / "plain.pt"
    save_checkpoint(unversioned, path)
    logged = f"sha256:{file_sha256(path)[:12]}"
    report, out = tmp_path / "r.json", tmp_path / "new.pt"
    report.write_text(_traced(["some-other-model"]).to_json())
    assert main(["checkpoint", "recalibrate", str(path), "--from", str(report), "-o", str(out)]) == 2
    assert stderr_line(capsys) == (
        "ropewatch checkpoint recalibrate: report traces model version(s) ['some-other-model'], "
        f"checkpoint is '{logged}' (pass --allow-other-version to use it anyway)"
    )
    assert not out.exists()
    report.write_text(_traced([logged]).to_json())
    assert main(["checkpoint", "recalibrate", str(path), "--from", str(report), "-o", str(out)]) == 0
    assert torch.load(out, weights_only=True)["calibration"]["previous"]["version"] is None
    with pytest.raises(RecalibrationError, match="report traces model version.s. none, checkpoint is 'v1'"):
        recalibrate({"thr": 0.5, "version": "v1"}, _traced([]))
    with pytest.raises(RecalibrationError, match="checkpoint is 'unversioned'"):
        recalibrate({"thr": 0.5}, _traced(["v1"]))


def test_concurrent_checkpoint_writers_never_clobber_each_other(tiny_checkpoint_dict, tmp_path):
    """Eight threads save different checkpoints to one path at once: every save succeeds, the file is
    always one whole checkpoint of the eight, and no temp file is left."""
    path = tmp_path / "shared.pt"
    versions = [f"writer-{i}" for i in range(8)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(versions))

    def write(version: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                save_checkpoint({**tiny_checkpoint_dict, "version": version}, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torch.load(path, weights_only=True)["version"] in versions
    assert [p.name for p in tmp_path.iterdir()] == ["shared.pt"]


def test_a_damaged_history_db_with_a_valid_header_is_named_damaged(tmp_path, capsys, make_report):
    db = tmp_path / "h.sqlite"
    open_store(str(db)).close()
    data = bytearray(db.read_bytes())
    data[18] = 3  # the header's write-format version: SQLite would open the file read-only
    db.write_bytes(bytes(data))
    assert main(["history", "--db", str(db)]) == 2
    assert stderr_line(capsys) == (
        f"ropewatch history: history store sqlite:///{db}: damaged SQLite header (file format versions 3/1, "
        "expected 1 or 2) (the file is damaged: move it aside (or restore a backup) and run again)"
    )
    ro = open_store(f"sqlite:///file:{tmp_path / 'ro.sqlite'}?uri=true")
    ro.close()
    store = open_store(f"sqlite:///file:{tmp_path / 'ro.sqlite'}?mode=ro&uri=true")
    with pytest.raises(HistoryError, match="readonly database .the file or its folder is read-only here"):
        store.record_run(make_report())
    with sqlite3.connect(tmp_path / "ro.sqlite") as conn:
        assert conn.execute("select count(*) from runs").fetchone() == (0,)


def test_https_to_an_http_port_is_named_on_the_command_line(httpserver, tmp_path, capsys):
    host = httpserver.url_for("").rstrip("/").replace("http://", "https://")
    code = main(["validate-job", "1", "--server-host", host, "--retries", "0", "--out", str(tmp_path),
                 "--db", str(tmp_path / "h.sqlite")])  # fmt: skip
    assert code == 2
    assert f"job 1 on {host}: TLS handshake failed, is it an http:// server?" in stderr_line(capsys)


def test_validate_job_with_no_server_configured_says_what_to_set(tmp_path, capsys, monkeypatch):
    """A new user's first `validate-job 5`: one line naming the option and the variables, at once (not
    retries against localhost:8080), and no history store created for a run that validated nothing."""
    for name in ("CVAT_SERVER_HOST", "CVAT_ACCESS_TOKEN", "ROPEWATCH_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["validate-job", "5"]) == 2
    line = stderr_line(capsys)
    assert line.startswith("validate-job: no CVAT server: give --server-host URL or set CVAT_SERVER_HOST")
    assert "CVAT_ACCESS_TOKEN" in line and "--auth USER" in line
    assert not (tmp_path / "data").exists()  # no ~/.local/share/ropewatch/history.sqlite
