"""A full-page screenshot of a build's report.html as headless Chromium renders it, with the same check the tests run
(edgeprune/report/browser.py): it refuses to write the picture of a page with a console error or an image that does
not decode.

    python benchmarks/report_screenshot.py <build-dir> docs/report-quickstart.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeprune.report.browser import BrowserError, check_page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="an edgeprune build's --out folder (holds report.html)")
    parser.add_argument("png", type=Path, help="where the screenshot goes")
    args = parser.parse_args()
    page = args.build / "report.html"
    if not page.is_file():
        print(f"error: {page} not found (is {args.build} a build's --out folder?)", file=sys.stderr)
        return 2
    try:
        check = check_page(page)
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if check.problems:
        print("error: the page has problems, no screenshot written:\n  " + "\n  ".join(check.problems), file=sys.stderr)
        return 1
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.write_bytes(check.screenshot)
    print(f"{args.png}: {len(check.screenshot) / 1024:.0f} KiB, {check.images} plots, no console errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
