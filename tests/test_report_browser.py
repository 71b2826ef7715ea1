"""The headless-Chromium check that report.html is tested with (edgeprune/report/browser.py) catches what a user
would meet: console errors, uncaught exceptions, images that do not decode or load; and passes a clean page.
A real build's report.html is opened in it by tests/test_build.py (the build is that file's)."""

from __future__ import annotations

import base64
import io

import pytest

from edgeprune.report.browser import check_page, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (Debian: apt-get install chromium)")


def _png_data_url() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_clean_page_passes_with_its_text_images_and_screenshot(tmp_path):
    page = tmp_path / "clean.html"
    page.write_text(f"<!doctype html><html><body><h1>Can I ship this?</h1><p>Yes &amp; measured</p>"
                    f"<img alt='plot' src='{_png_data_url()}'></body></html>")  # fmt: skip
    check = check_page(page)
    assert check.problems == [] and check.images == 1
    assert "Can I ship this?" in check.text and "Yes & measured" in check.text
    assert check.screenshot.startswith(b"\x89PNG\r\n\x1a\n") and len(check.screenshot) > 1000


def test_console_errors_exceptions_and_broken_images_are_each_caught(tmp_path):
    truncated = _png_data_url()[:60]  # a PNG header and nothing after it: does not decode
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><body><p>report</p>"
        f"<img alt='truncated' src='{truncated}'>"
        "<img alt='missing' src='no-such-plot.png'>"
        "<script>console.error('plot ' + 7 + ' failed');</script>"
        "<script>undefinedFunction();</script>"
        "<script>console.log('a log line'); console.warn('a warning line');</script>"
        "</body></html>"
    )
    check = check_page(page)
    errors = "\n".join(check.console_errors)
    assert "plot 7 failed" in errors
    assert "undefinedFunction is not defined" in errors
    assert "ERR_FILE_NOT_FOUND" in errors  # the browser's own log: the missing file
    assert "log line" not in errors and "warning line" not in errors  # not errors
    assert check.images == 2 and len(check.broken_images) == 2
    assert any(b.startswith(f"'truncated' ({truncated[:40]}") for b in check.broken_images)
    assert any("no-such-plot.png" in b for b in check.broken_images)
