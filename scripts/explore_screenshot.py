"""The screenshot docs/explore.md and the README show (``make docs``): bert-base's explore page in headless
Chromium, with the controls moved and the transformer layer's box clicked.

Usage: python scripts/explore_screenshot.py docs/img/explore.png
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from symbert.validate.browser import Chromium, find

#: The controls as the screenshot shows them.
FRAGMENT = "B=16&seq_len=512&precision=amp&attention=sdpa&gpu=a100-40gb&box=encoder/layer"


def main(png: Path) -> None:
    executable = find()
    if executable is None:
        sys.exit("Chromium is not installed: make system-deps")
    with TemporaryDirectory() as folder:
        page = Path(folder) / "bert-base.html"
        command = [sys.executable, "-m", "symbert", "explore", "--preset", "bert-base", "-o", str(page)]
        subprocess.run(command, check=True)
        with Chromium(executable, width=1600, height=1250) as browser:
            browser.open(page, FRAGMENT)
            browser.screenshot(png, whole=False)
    print(png)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs/img/explore.png")
