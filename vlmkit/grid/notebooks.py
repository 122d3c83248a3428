"""The notebooks shipped inside the package: where they are, and copying them out for your own edits.

The numbered notebooks (``01_data.ipynb`` ... ``07_report.ipynb``) are package data of ``vlmkit``
(``vlmkit/notebooks/``), so an installed wheel has them too; grids execute them from there. To change
one, copy them out (``vlmkit notebooks DIR``) and point a grid at the copy (``notebooks_dir=DIR``).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from vlmkit.errors import DataNotFoundError, VLMKitError


class NotebookExistsError(VLMKitError, FileExistsError):
    """Copying the notebooks would overwrite files that are already there."""


def packaged_notebooks() -> Path:
    """The folder of the notebooks shipped with vlmkit (``importlib.resources``: ``vlmkit/notebooks``)."""
    return Path(str(resources.files("vlmkit") / "notebooks"))


def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks (``*.ipynb``) of ``folder`` (default: the packaged ones), sorted by name.

    Raises:
        DataNotFoundError: The folder does not exist.
    """
    root = Path(folder) if folder is not None else packaged_notebooks()
    if not root.is_dir():
        raise DataNotFoundError(f"notebook folder {str(root)!r} does not exist")
    return sorted(root.glob("*.ipynb"))


def copy_notebooks(dest: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Copy the packaged notebooks into ``dest`` (created) and return the copies' paths.

    Nothing is copied when a notebook of the same name is already in ``dest`` unless ``force``, so
    your edits are never overwritten by accident.

    Args:
        dest: Target folder.
        force: Overwrite notebooks of the same name.

    Raises:
        NotebookExistsError: ``dest`` already holds some of the notebooks and ``force`` is False (the
            message names them); nothing was copied.
        DataNotFoundError: The package has no notebooks (a broken installation).
    """
    sources = list_notebooks()
    if not sources:
        raise DataNotFoundError(f"no notebooks in {str(packaged_notebooks())!r}: reinstall vlmkit")
    out = Path(dest).expanduser()
    if out.exists() and not out.is_dir():
        raise NotebookExistsError(f"{str(out)!r} is a file, not a folder")
    clash = [out / s.name for s in sources if (out / s.name).exists()]
    if clash and not force:
        raise NotebookExistsError(f"{len(clash)} notebook(s) already in {str(out)!r} "
                                  f"({', '.join(p.name for p in clash)}); pass --force (force=True) to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(s, out / s.name)) for s in sources]


__all__ = ["NotebookExistsError", "copy_notebooks", "list_notebooks", "packaged_notebooks"]
