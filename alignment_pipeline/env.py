"""The environment variables the pipeline reads, named in one place.

Only names live here: every reader looks a variable up when it runs, so a value set after import (by the CLI's
options, a test, a launcher) is the one used.
"""

from __future__ import annotations

import os

#: profile name (a profiles/*.yaml name: smoke, small, study, paper) used when none is given
PROFILE = "ALIGNMENT_PROFILE"
#: the home directory everything is written to (default ./.alignment)
HOME = "ALIGNMENT_HOME"
#: folder of prompt files, overriding the profile's prompts.inbox
INBOX = "ALIGNMENT_INBOX"
#: YAML/JSON file of settings applied on top of the profile
SETTINGS = "ALIGNMENT_SETTINGS"
#: MLflow tracking URI, replacing the SQLite store in the home
MLFLOW_URI = "ALIGNMENT_MLFLOW_URI"

ALL = (PROFILE, HOME, INBOX, SETTINGS, MLFLOW_URI)


def get(name: str) -> str | None:
    """The variable's value now; unset and empty both read as None."""
    return os.environ.get(name) or None


__all__ = ["ALL", "HOME", "INBOX", "MLFLOW_URI", "PROFILE", "SETTINGS", "get"]
