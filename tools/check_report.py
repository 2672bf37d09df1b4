"""Open a demo report in a real headless browser and check what a reader sees: every image loads, and
nothing is wider than the page, at a laptop's width and a phone's.

    uv run --extra test --extra browser python tools/check_report.py runs/demo-TIME/report.html [--browser PATH]

The browser is a system Chromium (`apt-get install chromium`, or --browser PATH): playwright drives it and
downloads nothing. Exit 0 when every check holds, 1 with a line per failure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WIDTHS = {"laptop": 1280, "phone": 390}
# For each image: whether it loaded, its natural size; and the page's widest element against the viewport.
PROBE = """() => ({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                           shown: i.getBoundingClientRect().width})),
  scroll: document.documentElement.scrollWidth, view: window.innerWidth,
  wide: [...document.body.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
        && getComputedStyle(e).overflowX === 'visible' && !e.closest('table')).map(e => e.tagName).slice(0, 5)
})"""


def check(report: Path, browser: str) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        for name, width in WIDTHS.items():
            page = chromium.new_page(viewport={"width": width, "height": 900})
            page.goto(report.resolve().as_uri(), wait_until="load")
            got = page.evaluate(PROBE)
            if not got["images"]:
                problems.append(f"{name}: the report has no images")
            for img in got["images"]:
                if not img["ok"]:
                    problems.append(f"{name}: image {img['src']} did not load")
                elif img["shown"] > got["view"] + 1:
                    problems.append(f"{name}: image {img['src']} is {img['shown']:.0f} px wide in a {width} px page")
            if got["scroll"] > got["view"] + 1:
                problems.append(f"{name}: the page scrolls sideways ({got['scroll']} px in {got['view']} px): "
                                f"{', '.join(got['wide']) or 'a table'}")
            print(f"{name} ({width} px): {len(got['images'])} images, page {got['scroll']} px wide", flush=True)
            page.close()
        chromium.close()
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = ap.parse_args()
    if not args.report.is_file():
        sys.exit(f"error: {args.report} is not a file; give a demo's report.html")
    if not args.browser:
        sys.exit("error: no chromium on PATH; apt-get install chromium, or pass --browser PATH")
    problems = check(args.report, args.browser)
    for line in problems:
        print(line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
