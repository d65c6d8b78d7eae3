"""Regenerate the settings table in README.md from the config classes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from engine.app.config import settings_markdown

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def updated(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{settings_markdown()}{END}", text)


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(updated(path.read_text()))
    sys.exit(0)
