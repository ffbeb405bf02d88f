"""Charts as markdown: a PNG embedded as a data URL, so the Dagster UI shows it without a file server."""

import base64
from pathlib import Path


def png_markdown(path: str | Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{title}](data:image/png;base64,{data})"
