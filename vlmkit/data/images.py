"""Decode-once image storage shared by every vlmkit dataset.

Every dataset type (:class:`~vlmkit.data.captions.CaptionedImages`,
:class:`~vlmkit.data.labelled.LabelledImages`, :class:`~vlmkit.data.typographic.TypographicImages`)
derives from :class:`ImageDataset`, which owns the list of image files and turns them into one
``uint8`` tensor ``(N, 3, S, S)``:

* each file is decoded **once** per resolution/mode: the result is cached on disk in one ``.npz``
  per (content hash of all files, ``S``, mode) under ``cache_dir`` (default
  ``$VLMKIT_CACHE/images``, i.e. ``~/.cache/vlmkit/images`` when ``VLMKIT_CACHE`` is unset);
* ``mode="crop"`` resizes the shorter side to ``S`` (bicubic, antialiased, as CLIP's preprocess)
  and center-crops ``S x S``; ``mode="squash"`` resizes straight to ``S x S``;
* a missing or undecodable file raises an error naming it, or with ``on_error="skip"`` the item is
  dropped from the dataset (in place) and a warning gives the count.

Floats for a model come from :func:`to_float` on a batch, so the cache stays four times smaller.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, InputError, did_you_mean
from vlmkit.runtime import cache_root, make_generator, resolve_device

ResizeMode = Literal["crop", "squash"]
OnError = Literal["raise", "skip"]

#: Bump when the decoding recipe changes, so stale cache files are never reused.
_CACHE_VERSION = "vlmkit-images-v1"
_MODES = ("crop", "squash")
_ON_ERROR = ("raise", "skip")
#: File name suffixes treated as images when a folder is scanned.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MAX_SIZE = 4096

D = TypeVar("D", bound="ImageDataset")

_digest_memo: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def default_cache_dir() -> Path:
    """Where decoded images are cached: ``$VLMKIT_CACHE/images`` or ``~/.cache/vlmkit/images``."""
    return cache_root() / "images"


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument (``"raise"`` or ``"skip"``)."""
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not supported; expected 'raise' or 'skip'")
    return on_error  # type: ignore[return-value]


def check_size(size: int) -> int:
    """Validate an output resolution ``S`` (a positive int up to 4096)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size={size!r} must be a positive int (the output side S of (N, 3, S, S)), e.g. 224")
    if not 1 <= int(size) <= _MAX_SIZE:
        raise ValueError(f"size={size} is out of range; expected 1 <= size <= {_MAX_SIZE}, e.g. 224")
    return int(size)


def check_mode(mode: str) -> ResizeMode:
    """Validate a resize ``mode`` (``"crop"`` or ``"squash"``)."""
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not supported; expected one of {_MODES}.{did_you_mean(str(mode), _MODES)}")
    return mode  # type: ignore[return-value]


def file_digest(path: Path) -> str:
    """Content hash (BLAKE2b-128, hex) of one file, memoised on (path, mtime, size).

    Raises:
        DataNotFoundError: The file does not exist.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataNotFoundError(f"image file not found: {path}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _digest_lock:
        hit = _digest_memo.get(key)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _digest_lock:
        _digest_memo[key] = digest
    return digest


def open_image(path: Path, pil_mode: str = "RGB", what: str = "image file") -> Image.Image:
    """Open and fully decode an image file, converted to ``pil_mode`` ("RGB", "L" ...).

    Raises:
        DataNotFoundError: The file does not exist.
        DataError: The file is not a readable image (the message names it and ``what`` it is).
    """
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(pil_mode)
    except FileNotFoundError:
        raise DataNotFoundError(f"{what} not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode {what} {path}: {type(e).__name__}: {e}") from e


def resize_square(img: Image.Image, size: int, mode: ResizeMode, interpolation: str = "bicubic") -> Image.Image:
    """``size x size`` with the geometry of ``mode``: ``"crop"`` resizes the shorter side to ``size`` and
    center-crops; ``"squash"`` resizes both sides. ``interpolation``: "bicubic" (antialiased) or "nearest"."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    interp = {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}[interpolation]
    if mode == "crop":
        return TF.center_crop(TF.resize(img, size, interpolation=interp, antialias=True), [size, size])
    return TF.resize(img, [size, size], interpolation=interp, antialias=True)


def decode_image(path: Path, size: int, mode: ResizeMode = "crop") -> np.ndarray:
    """Decode one image file to a ``uint8`` array ``(3, S, S)``.

    ``mode="crop"``: resize the shorter side to ``size`` (bicubic with antialiasing, like CLIP's
    preprocess), then center-crop ``size x size``. ``mode="squash"``: resize to ``size x size``.

    Raises:
        DataNotFoundError: The file does not exist.
        DataError: The file is not a readable image (the message names it).
    """
    rgb = resize_square(open_image(path, "RGB"), size, mode)
    arr = np.asarray(rgb, dtype=np.uint8)  # (S, S, 3)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (3, S, S)


def _decode_one(path: Path, size: int, mode: ResizeMode) -> np.ndarray:
    """Indirection used by :meth:`ImageDataset.load_images` (tests patch it to count decodes)."""
    return decode_image(path, size, mode)


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a ``uint8`` batch ``(B, 3, H, W)`` (or one image ``(3, H, W)``) to floats in [0, 1].

    Args:
        images: ``uint8`` tensor as returned by :meth:`ImageDataset.load_images` (or a slice of it).
        dtype: Floating dtype of the result.

    Raises:
        InputError: ``images`` is not a ``uint8`` tensor with 3 channels.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"to_float expects a uint8 tensor from load_images(); got {got}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise InputError(f"to_float expects shape (B, 3, H, W) or (3, H, W); got {tuple(images.shape)}")
    if not dtype.is_floating_point:
        raise InputError(f"to_float needs a floating dtype; got {dtype}")
    return images.to(dtype).div_(255.0)


def _atomic_save(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` to a temp file beside ``path`` and ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ImageDataset(abc.ABC):
    """A list of image files with decode-once loading, subsetting and summaries.

    Subclasses add their annotations (captions, labels, attack words) and implement
    :meth:`_select`, which builds a new dataset from a list of item indices.

    Args:
        paths: One image file per item.
        name: Short human-readable name (used in progress bars and summaries).
        on_error: Default for :meth:`load_images`: ``"raise"`` on a missing/undecodable file, or
            ``"skip"`` to drop such items with a warning.
    """

    def __init__(self, paths: Sequence[str | Path], *, name: str = "", on_error: OnError = "raise") -> None:
        self.paths: list[Path] = [Path(p) for p in paths]
        self.name = name or type(self).__name__
        self.on_error: OnError = check_on_error(on_error)

    # ------------------------------------------------------------------ item access
    def __len__(self) -> int:
        return len(self.paths)

    def _index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be ints; use .select(indices) for many items")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} is out of range for {type(self).__name__} with {n} items")
        return j

    @property
    def classnames(self) -> list[str]:
        """Class names of the label space (empty for sets without classes, e.g. captions)."""
        return []

    @abc.abstractmethod
    def _select(self: D, indices: list[int]) -> D:
        """A new dataset of the same type holding the items ``indices`` (in that order)."""

    def select(self: D, indices: Sequence[int] | torch.Tensor) -> D:
        """A new dataset of the same type with the items at ``indices`` (in that order).

        Raises:
            IndexError: An index is out of range.
        """
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        return self._select([self._index(i) for i in idx])

    def subset(self: D, n: int | None = None, seed: int = 0) -> D:
        """A deterministic random subset of ``n`` items (all items when ``n`` is None).

        The same ``n`` and ``seed`` always give the same items, kept in dataset order; with one seed a
        smaller subset is contained in a larger one.

        Raises:
            ValueError: ``n`` is not a positive int.
            DataError: ``n`` is larger than the dataset.
        """
        total = len(self)
        if n is None:
            return self._select(list(range(total)))
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int (or None for every item)")
        if n > total:
            raise DataError(
                f"cannot take a subset of n={n} {self._unit()} from {self.name}: it has only {total}; "
                f"use n <= {total} or n=None"
            )
        perm = torch.randperm(total, generator=make_generator(seed))[: int(n)]
        return self._select(sorted(perm.tolist()))

    def _unit(self) -> str:
        return "items"

    def summary(self) -> dict[str, Any]:
        """Counts describing the dataset (subclasses add theirs)."""
        return {"type": type(self).__name__, "name": self.name, "images": len(self)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.summary().items() if k not in ("type",))
        return f"{type(self).__name__}({inner})"

    # ------------------------------------------------------------------ file checks
    def _drop_in_place(self, keep: list[int], bad: list[tuple[Path, str]], what: str) -> None:
        """Replace this dataset's items by ``keep`` after warning about the ``bad`` files."""
        shown = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + (" ..." if len(bad) > 3 else "")
        warnings.warn(
            f"{self.name}: skipped {len(bad)} {what} image file(s) (on_error='skip'); "
            f"{len(keep)} of {len(self)} items remain. First: {shown}",
            stacklevel=3,
        )
        if not keep:
            raise EmptyDatasetError(f"{self.name}: no readable images left after skipping {len(bad)} file(s)")
        self.__dict__.update(self._select(keep).__dict__)

    def check_files(self, on_error: OnError | None = None) -> None:
        """Check that every image file exists (cheap: no decoding).

        With ``on_error="skip"`` missing files are dropped from this dataset in place with a warning.

        Raises:
            DataNotFoundError: A file is missing (``on_error="raise"``); the message names it.
            EmptyDatasetError: Nothing is left after skipping.
        """
        mode = check_on_error(on_error or self.on_error)
        missing = [i for i, p in enumerate(self.paths) if not p.is_file()]
        if not missing:
            return
        if mode == "raise":
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataNotFoundError(
                f"{self.name}: image file not found: {self.paths[missing[0]]}{more}. "
                "Check the image root, or pass on_error='skip' to drop missing files."
            )
        gone = set(missing)
        self._drop_in_place(
            [i for i in range(len(self)) if i not in gone], [(self.paths[i], "missing") for i in missing], "missing"
        )

    # ------------------------------------------------------------------ decoding
    def content_hash(self) -> str:
        """Hash of the ordered contents of all image files (the cache key's dataset part)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(_CACHE_VERSION.encode())
        for p in self.paths:
            h.update(file_digest(p).encode())
        return h.hexdigest()

    def cache_path(self, size: int, mode: ResizeMode = "crop", cache_dir: str | Path | None = None) -> Path:
        """The cache file :meth:`load_images` reads/writes for ``(size, mode)``."""
        size, mode = check_size(size), check_mode(mode)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return root / f"{self.content_hash()}_{size}_{mode}.npz"

    def load_images(
        self,
        size: int = 224,
        mode: ResizeMode = "crop",
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        *,
        on_error: OnError | None = None,
        use_cache: bool = True,
        num_workers: int | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Every image decoded once to a ``uint8`` tensor ``(N, 3, S, S)``, cached on disk.

        Args:
            size: Output side ``S``.
            mode: ``"crop"`` (shorter side to ``S``, center crop) or ``"squash"`` (resize to ``S x S``).
            cache_dir: Cache folder; default ``$VLMKIT_CACHE/images`` or ``~/.cache/vlmkit/images``.
            device: Where the returned tensor lives (``"cpu"``, ``"cuda"``, ``"auto"``...).
            on_error: ``"raise"`` or ``"skip"``; defaults to the dataset's ``on_error``. Skipping
                drops unreadable items **from this dataset** (so ``len(self)`` always equals ``N``).
            use_cache: Read/write the disk cache (``False`` always decodes and writes nothing).
            num_workers: Decoding threads (default ``min(4, cpu_count)``).
            progress: Show a ``tqdm`` bar while decoding.

        Returns:
            ``uint8`` tensor ``(N, 3, S, S)`` on ``device``; row ``i`` is item ``i``.

        Raises:
            ValueError: Bad ``size``/``mode``/``on_error``.
            DataNotFoundError: A file is missing (``on_error="raise"``).
            DataError: A file cannot be decoded (``on_error="raise"``); the message names it.
            EmptyDatasetError: The dataset is empty, or nothing is left after skipping.
        """
        size, mode = check_size(size), check_mode(mode)
        policy = check_on_error(on_error or self.on_error)
        dev = resolve_device(device)
        if len(self) == 0:
            raise EmptyDatasetError(f"{self.name} has no images to load")
        self.check_files(policy)

        cache_file = self.cache_path(size, mode, cache_dir) if use_cache else None
        images = self._read_cache(cache_file, size, policy) if cache_file is not None else None
        if images is None:
            images, kept, bad = self._decode_all(size, mode, policy, num_workers, progress)
            if cache_file is not None:
                try:
                    _atomic_save(cache_file, images=images, kept=np.asarray(kept, dtype=np.int64),
                                 bad=np.asarray([str(self.paths[i]) for i, _ in bad], dtype=str))
                except OSError as e:
                    warnings.warn(f"could not write image cache {cache_file}: {e}", stacklevel=2)
            if bad:
                self._drop_in_place(kept, [(self.paths[i], why) for i, why in bad], "unreadable")
        return torch.from_numpy(images).to(dev)  # (N, 3, S, S)

    def _read_cache(self, cache_file: Path, size: int, policy: OnError) -> np.ndarray | None:
        """The cached array for this dataset, or None on a miss or an unusable cache file."""
        if not cache_file.is_file():
            return None
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                images, kept, bad = z["images"], z["kept"], z["bad"]
        except (OSError, ValueError, KeyError, EOFError):
            return None  # truncated/foreign file: decode again and overwrite
        if images.dtype != np.uint8 or images.shape[1:] != (3, size, size) or len(images) != len(kept):
            return None
        kept_l = kept.tolist()
        if len(kept_l) == len(self):
            return images
        if policy == "raise":
            raise DataError(
                f"{self.name}: cannot decode image file {bad[0] if len(bad) else '?'}"
                f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} (recorded in cache {cache_file.name}). "
                "Replace the file, or pass on_error='skip' to drop it."
            )
        gone = set(kept_l)
        dropped = [(self.paths[i], "unreadable (cached)") for i in range(len(self)) if i not in gone]
        self._drop_in_place(kept_l, dropped, "unreadable")
        return images

    def _decode_all(
        self, size: int, mode: ResizeMode, policy: OnError, num_workers: int | None, progress: bool
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Decode every file; returns (images of kept items, kept indices, (index, reason) of bad ones)."""
        from tqdm.auto import tqdm

        n = len(self)
        workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
        out = np.empty((n, 3, size, size), dtype=np.uint8)  # (N, 3, S, S)
        ok = np.zeros(n, dtype=bool)
        bad: list[tuple[int, str]] = []

        def work(i: int) -> tuple[int, np.ndarray | None, Exception | None]:
            try:
                return i, _decode_one(self.paths[i], size, mode), None
            except (DataError, DataNotFoundError) as e:
                return i, None, e

        bar = tqdm(total=n, desc=f"decoding {self.name} @{size} {mode}", unit="img", disable=not progress, leave=False)
        try:
            if workers <= 1:
                self._collect(map(work, range(n)), out, ok, bad, policy, bar)
            else:
                pool = ThreadPoolExecutor(max_workers=workers)
                try:
                    self._collect(pool.map(work, range(n)), out, ok, bad, policy, bar)
                finally:  # on an error, do not decode the rest
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            bar.close()
        kept = np.flatnonzero(ok).tolist()
        return (out if len(kept) == n else out[ok]), kept, bad

    @staticmethod
    def _collect(results: Any, out: np.ndarray, ok: np.ndarray, bad: list[tuple[int, str]], policy: OnError,
                 bar: Any) -> None:
        for i, arr, err in results:
            if err is not None:
                if policy == "raise":
                    raise err
                bad.append((i, str(err)))
            else:
                out[i] = arr
                ok[i] = True
            bar.update(1)
