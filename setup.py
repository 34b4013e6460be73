"""Ship the recipe's notebooks and profiles inside the wheel (everything else is in pyproject.toml).

``build_py`` copies ``notebooks/*.ipynb`` and ``params/`` (profiles and accelerate configs) into the built package
as ``medslm/_data/``, so an installed medslm finds them through importlib.resources without a checkout
(:mod:`medslm.resources`). An editable install reads the checkout's folders directly and copies nothing.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = {"notebooks": ("*.ipynb",), "params": ("*.yaml", "accelerate/*.yaml")}


class BuildPyWithRecipe(build_py):
    """build_py, then copy the notebooks and profiles into <build>/medslm/_data/ (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, patterns in SHIPPED.items():
            dest = Path(self.build_lib) / "medslm" / "_data" / folder
            shutil.rmtree(dest, ignore_errors=True)
            for pattern in patterns:
                for src in sorted((ROOT / folder).glob(pattern)):
                    target = dest / src.relative_to(ROOT / folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)


setup(cmdclass={"build_py": BuildPyWithRecipe})
