"""Screenshots for the README: report.html and every dashboard page, on the demo's history.

    .venv/bin/python docs/make_screenshots.py          # writes docs/*.png

Runs the demo's validator part (eight sandbox jobs, two model versions, one alert rule), serves
the history with `ropewatch serve`'s app, and photographs each page with Debian's chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from ropewatch_validator.cli.demo import DEMO_VERSIONS, run_validator_demo  # noqa: E402
from ropewatch_validator.web.app import create_app, read_only_engine  # noqa: E402
from support.browser import chromium, watch  # noqa: E402
from support.webserver import serving  # noqa: E402


def main() -> None:
    new = DEMO_VERSIONS[1][0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        assert run_validator_demo(work) == 0
        with (
            serving(create_app(read_only_engine(str(work / "history.sqlite")))) as url,
            chromium() as browser,
        ):
            shots = [
                ("report.png", (work / "reports" / "job-108" / "report.html").as_uri(), 1900),
                ("dashboard-versions.png", url + "/", 420),
                ("dashboard-trend.png", f"{url}/trend?version={new}", 1000),
                ("dashboard-version.png", f"{url}/version?name={new}", 900),
                ("dashboard-jobs.png", url + "/jobs", 760),
                ("dashboard-alerts.png", url + "/alerts", 560),
            ]
            for name, address, height in shots:
                seen = watch(browser, width=1300, height=height)
                seen.page.goto(address)
                seen.page.screenshot(path=str(DOCS / name))
                assert seen.problems() == [], seen.problems()
                print(f"wrote docs/{name}")


if __name__ == "__main__":
    main()
