"""Where experiments live: a local directory or any pyarrow filesystem URI (s3://, gs://, file://)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable

import pyarrow.fs as pafs


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it; local paths are made absolute."""
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(str(location))
        except (pafs.ArrowInvalid, ValueError, OSError) as exc:
            raise ValueError(f"storage {location}: {exc}") from None
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when there is no such file."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def download(fs: pafs.FileSystem, root: str, dest: Path, accept: Callable[[str], bool]) -> int:
    """Copy the files under ``root`` whose relative path ``accept`` takes into ``dest``, keeping
    files already there. Returns how many were copied."""
    root = root.rstrip("/")
    copied = 0
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        rel = info.path[len(root):].lstrip("/")
        target = dest / rel
        if info.type != pafs.FileType.File or not accept(rel) or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out)
        copied += 1
    return copied


def upload(files: Iterable[Path], fs: pafs.FileSystem, root: str) -> None:
    fs.create_dir(root, recursive=True)
    for path in files:
        with path.open("rb") as src, fs.open_output_stream(f"{root.rstrip('/')}/{path.name}") as out:
            shutil.copyfileobj(src, out)
