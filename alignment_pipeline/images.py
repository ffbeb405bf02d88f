"""Charts as markdown: a PNG embedded as a data URL, so the Dagster UI shows it without a file server."""

import base64
import textwrap
from pathlib import Path

# Characters of a title line that fit the width of the project's charts (6-7 inches, 12-point titles).
TITLE_WIDTH = 56


def png_markdown(path: str | Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{title}](data:image/png;base64,{data})"


def wrapped_title(text: str, width: int = TITLE_WIDTH) -> str:
    """A chart title broken into lines that fit the chart, so no part of it is cut off at the edges."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text
