"""Open a written ``report.html`` in headless Chromium and fail if any figure did not render.

A report can hold valid-looking base64 that no browser will decode; this asks Chromium itself,
so a zero here means a reader would see a broken image. The browser logic lives in
``tests/browser.py`` (shared with the test suite); this script only adds a command line.

Run: ``python benchmarks/render_report.py runs/report.html [--screenshot report.png]``
(about a second per Chromium start; needs ``apt-get install chromium``).
Exit codes: 0 all images rendered, 1 some image has a zero size, 2 Chromium missing or failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import find_chromium, render_images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to open")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a PNG of the page")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per Chromium run")
    args = parser.parse_args(argv)

    if find_chromium() is None:
        print("Chromium not installed: apt-get install chromium", file=sys.stderr)
        return 2
    try:
        sizes = render_images(args.report, screenshot=args.screenshot, timeout_s=args.timeout)
    except (RuntimeError, FileNotFoundError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2

    broken = 0
    for label, width, height in sizes:
        bad = width == 0 or height == 0
        broken += bad
        print("%-8s %5d x %-5d %s" % ("BROKEN" if bad else "ok", width, height, label))
    print("%d image(s), %d broken" % (len(sizes), broken))
    if args.screenshot is not None:
        print("screenshot: %s" % args.screenshot.resolve())
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
