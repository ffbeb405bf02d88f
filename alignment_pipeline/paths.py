"""Where things live: the project's input data (sql/, assets/) and the home everything is written to."""

from __future__ import annotations

import os
from pathlib import Path

from alignment_pipeline import env

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    # A source checkout (editable install) reads the top-level folder; a wheel carries a copy in _data/.
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the project's {name}/ folder next to {_PACKAGE}")


def sql_dir() -> Path:
    return _data_dir("sql")


def assets_dir() -> Path:
    return _data_dir("assets")


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The one directory the pipeline writes to: $ALIGNMENT_HOME, default ./.alignment."""
    raw = home or env.get(env.HOME) or ".alignment"
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


class HomeLayout:
    """Named places under the home directory."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.root = home_dir(home)

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self._dir("mlartifacts")

    @property
    def checkpoints(self) -> Path:
        return self._dir("checkpoints")

    @property
    def models(self) -> Path:
        return self._dir("models")

    @property
    def dagster_home(self) -> Path:
        return self._dir("dagster")

    @property
    def logs(self) -> Path:
        return self._dir("logs")

    @property
    def exports(self) -> Path:
        return self._dir("exports")

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path
