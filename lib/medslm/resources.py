"""Where the recipe's own files are: the notebooks, the profiles and the accelerate configs.

In a checkout they are the repository's ``notebooks/`` and ``params/`` (the folder above ``lib/`` holds
``pyproject.toml``). An installed wheel has no checkout: the build copies the same folders into the package as
``medslm/_data/notebooks`` and ``medslm/_data/params`` (see ``setup.py``), found here through
:mod:`importlib.resources`. ``medslm init DIR`` copies them out for a user to edit.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

SHIPPED = ("notebooks", "params")  # folders shipped as package data, under medslm/_data/


def checkout_root() -> Path | None:
    """The repository this package is imported from (an editable install or PYTHONPATH=lib), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def recipe_dir(name: str) -> Path:
    """``notebooks`` or ``params``: the checkout's folder, else the copy shipped inside the installed package."""
    if name not in SHIPPED:
        raise ValueError(f"unknown recipe folder {name!r}; known: {', '.join(SHIPPED)}")
    root = checkout_root()
    if root is not None:
        return root / name
    packaged = Path(str(resources.files("medslm") / "_data" / name))
    if not packaged.is_dir():
        raise FileNotFoundError(f"{packaged} is missing: this medslm installation has neither a checkout nor the "
                                "packaged notebooks/params (reinstall from a wheel built with `pip wheel .`)")
    return packaged


def notebooks_dir() -> Path:
    """The folder of the step notebooks the runner executes."""
    return recipe_dir("notebooks")


def accelerate_dir() -> Path:
    """The folder of the accelerate configs (``params/accelerate``)."""
    return recipe_dir("params") / "accelerate"


def init_project(target: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy ``notebooks/`` and ``params/`` into ``target`` (plus an empty ``outputs/``) for a user to edit; returns
    the folders written. An existing folder is refused unless ``overwrite``."""
    target = Path(target).expanduser().resolve()
    written = []
    for name in SHIPPED:
        dest = target / name
        if dest.exists() and not overwrite:
            raise FileExistsError(f"{dest} exists already; choose an empty folder or pass --force to overwrite it")
        shutil.copytree(recipe_dir(name), dest, dirs_exist_ok=overwrite,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        written.append(dest)
    (target / "outputs").mkdir(parents=True, exist_ok=True)
    return written
