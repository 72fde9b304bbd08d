"""Plain folders of images (any size, gray or colour, 8- or 16-bit)."""

from __future__ import annotations

from pathlib import Path

from distilad.data.images import is_image_file, list_images
from distilad.data.mvtec import FileImageSet
from distilad.errors import DataError


def image_folder(folder: str | Path, recursive: bool = True) -> FileImageSet:
    """All image files in ``folder`` (and its sub-folders), unlabelled."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    paths = list_images(folder, recursive=recursive)
    if not paths:
        raise DataError(f"no images (.png .jpg .jpeg .bmp .tif .webp) in {folder}")
    names = [str(p.relative_to(folder)) for p in paths]
    return FileImageSet(paths, None, None, folder.name, names=names)


def image_files(paths: list[str | Path]) -> FileImageSet:
    """Given files and folders: each folder is expanded to its images, files are taken as they are."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(image_folder(p).paths)
        elif p.is_file():
            if not is_image_file(p):
                raise DataError(f"not a supported image file: {p}")
            out.append(p)
        else:
            raise DataError(f"no such file or folder: {p}")
    if not out:
        raise DataError("no images given")
    return FileImageSet(out, None, None, "inputs", names=[p.name for p in out])
