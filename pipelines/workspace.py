"""Where jobs put what they make: a git-ignored work folder (default ./workspace)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STYLEREC_WORKDIR"
DEFAULT = "workspace"


def workdir(override: str | os.PathLike[str] | None = None) -> Path:
    """The work folder's path; not created here (``--help`` must leave no folder behind):
    every job creates the folders it writes."""
    return Path(override or os.environ.get(ENV_VAR) or DEFAULT)


def datasets_dir(wd: Path) -> Path:
    return wd / "datasets"


def resolve_dataset(arg: str, wd: Path) -> Path:
    """A dataset given as a path, or as a name under ``<workdir>/datasets``."""
    path = Path(arg)
    if path.exists() or path.is_absolute() or os.sep in arg:
        return path
    return datasets_dir(wd) / arg


def version_slug(version: str) -> str:
    """A model version label as one folder name."""
    return version.replace("/", "-").replace(":", "-")


def index_dir(wd: Path, dataset_name: str, version: str) -> Path:
    return wd / "indexes" / dataset_name / version_slug(version)
