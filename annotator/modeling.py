"""Shared loading helpers for every model backend (proposers, captioners, parsers, verifiers).

A backend names where its weights live (a hub id such as ``facebook/sam3`` or a local
directory written by ``save_pretrained``) and calls :func:`load_pretrained` with the
transformers class method that loads it. This module turns the many ways that can fail
(offline, gated, missing weights, a typo in a path) into one :class:`ModelLoadError` whose
message says what to do, and caches what it loaded so each checkpoint is read once per process.

It imports torch at the top: import it only from backend modules, never from
``annotator.backends`` or other code that must stay light.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from annotator.errors import ModelLoadError

__all__ = [
    "WEIGHT_SUFFIXES",
    "checkpoint_hash",
    "clear_cache",
    "default_dtype",
    "is_hub_id",
    "load_pretrained",
    "model_version",
    "resolve_device",
]

T = TypeVar("T")

# Files that hold weights (as opposed to configs, tokenizers, processors).
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

# "name" or "namespace/name" as the hub accepts them; anything else can only be a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# A hub snapshot inside the HF cache: .../models--owner--name/snapshots/<commit>/
_SNAPSHOT = re.compile(r"models--(?P<repo>.+?)[/\\]snapshots[/\\](?P<commit>[0-9a-f]{40})")

_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.Lock()
_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def resolve_device(setting: str) -> torch.device:
    """The torch device for a setting: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda[:N]``.

    Raises:
        ModelLoadError: CUDA requested on a host without a usable CUDA device, or an unknown value.
    """
    value = setting.strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise ModelLoadError(
                f"device {setting!r} was requested but CUDA is not available here ({build}); "
                "set ANNOTATOR_DEVICE=cpu or auto, or run this stage on a GPU worker"
            )
        device = torch.device(value)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {setting!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
        return device
    raise ModelLoadError(f"unknown device {setting!r}: use auto, cpu or cuda")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 on GPUs without bf16), fp32 on CPU where bf16 matmuls are slow."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def is_hub_id(source: str) -> bool:
    """Whether ``source`` is not an existing local path and has the shape of a hub repo id."""
    return not Path(source).expanduser().exists() and bool(_HUB_ID.match(source))


def _weight_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


def _checkpoint_files(directory: Path) -> list[Path]:
    """Every file that shapes a checkpoint's outputs: weights, configs, tokenizer files.

    Hidden files (``.cache/`` of ``huggingface-cli download``, ``.gitattributes``) and docs are
    left out: they change nothing the model does.
    """
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and not p.name.lower().startswith(("readme", "license"))
        and p.suffix.lower() != ".md"
    )


def _files_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of each checkpoint file: changes whenever one is rewritten."""
    if not directory.is_dir():
        return ()
    return tuple(
        (str(f.relative_to(directory)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in _checkpoint_files(directory)
    )


def _listing(directory: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    if not names:
        return "it is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


def _check_local(source: str, what: str, needs_weights: bool) -> None:
    """Fail early, with a listing, on a local path that cannot hold a checkpoint."""
    path = Path(source).expanduser()
    if not path.exists():
        if _HUB_ID.match(source):
            return  # a hub id
        raise ModelLoadError(
            f"cannot load {what}: {source!r} is neither a local directory nor a hub id "
            "('namespace/name'); pass the directory written by save_pretrained or a hub id "
            "such as facebook/sam3"
        )
    if not path.is_dir():
        raise ModelLoadError(
            f"cannot load {what}: {source!r} is a file, not a directory; pass the directory that "
            "holds config.json and the weights (model.safetensors), as written by save_pretrained"
        )
    if needs_weights and not _weight_files(path):
        raise ModelLoadError(
            f"cannot load {what}: the directory {source!r} has no weights ({_listing(path)}); "
            "expected config.json plus model.safetensors (or model-0000x-of-0000y.safetensors with "
            "model.safetensors.index.json, or pytorch_model.bin). Download the full checkpoint "
            "(`huggingface-cli download <repo id> --local-dir DIR`) or save it with save_pretrained"
        )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def _explain(exc: BaseException, source: str, what: str) -> str:
    """One message that says what went wrong and what to do about it."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain = list(_causes(exc))
    text = " ".join(str(e) for e in chain)
    path = Path(source).expanduser()
    local = path.is_dir()
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated repo" in text:
        return (
            f"cannot load {what}: {source!r} is a gated repository. Request access at "
            f"https://huggingface.co/{source}, then run `huggingface-cli login` (or set HF_TOKEN) "
            "on this machine, or download it on a machine with access and pass the local directory"
        )
    offline = any(isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled) for e in chain)
    offline = offline or "couldn't connect" in text.lower() or "offline mode" in text.lower()
    if not local and offline:
        mode = " (HF_HUB_OFFLINE is set)" if _hub_offline() else ""
        return (
            f"cannot load {what}: the hub id {source!r} is not in the local cache and the hub "
            f"cannot be reached{mode}. On a connected machine run "
            f"`huggingface-cli download {source} --local-dir DIR`, copy DIR here and pass it "
            "instead of the hub id (or fill the HF cache there and set HF_HUB_OFFLINE=1 here)"
        )
    if not local and any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return (
            f"cannot load {what}: {source!r} does not exist on the hub (or is private); check the "
            "spelling, run `huggingface-cli login` for a private repository, or pass a local "
            "directory"
        )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if local:
        return (
            f"cannot load {what} from the directory {source!r} ({_listing(path)}): "
            f"{detail}. The directory must be a complete checkpoint written by save_pretrained "
            "for this model type"
        )
    return f"cannot load {what} from {source!r}: {detail}"


def load_pretrained(
    loader: Callable[..., T],
    source: str,
    *,
    what: str,
    device: torch.device | None = None,
    needs_weights: bool = True,
    **kwargs: Any,
) -> T:
    """Call ``loader(source, **kwargs)`` (e.g. ``Sam3Model.from_pretrained``) once per process.

    Args:
        loader: a ``from_pretrained``-style callable.
        source: a hub id or a local directory.
        what: a short human name for the messages ("the SAM 3 model").
        device: move the result there (models); ``None`` for processors and tokenizers.
        needs_weights: whether a local directory must contain weight files (models do,
            processors and tokenizers do not).
        kwargs: passed to the loader (``dtype=...``); part of the cache key.

    Returns:
        The loaded object; a model is put in eval mode. The same object is returned for the same
        (loader, source, device, kwargs) for the rest of the process.

    Raises:
        ModelLoadError: with a message that says what to do (offline, gated, no weights, bad path).
    """
    key = (
        # The callable itself: bound classmethods compare equal across attribute look-ups.
        loader,
        str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source,
        # A local checkpoint rewritten in place (a retrained proposer) must be loaded again.
        _files_stamp(Path(source).expanduser()),
        str(device),
        tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
    )
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        _check_local(source, what, needs_weights)
        try:
            loaded = loader(
                str(Path(source).expanduser()) if not is_hub_id(source) else source, **kwargs
            )
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, ImportError) as exc:
            raise ModelLoadError(_explain(exc, source, what)) from exc
        if device is not None and isinstance(loaded, torch.nn.Module):
            loaded = loaded.to(device)
        if isinstance(loaded, torch.nn.Module):
            loaded.eval()  # inference only: no dropout, deterministic outputs
        _cache[key] = loaded
        return loaded


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing GPU memory between jobs)."""
    with _cache_lock:
        _cache.clear()


def _hub_commit(source: str) -> str | None:
    """The commit of a hub id's snapshot in the local cache, without touching the network."""
    match = _SNAPSHOT.search(str(Path(source).expanduser().resolve()))
    if match:
        return match.group("commit")
    if not _HUB_ID.match(source) or Path(source).expanduser().exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(source, local_files_only=True)
    except Exception:
        # Not cached (or not a model repo): the caller still has a usable, hash-less version.
        return None
    match = _SNAPSHOT.search(str(snapshot))
    return match.group("commit") if match else None


def checkpoint_hash(source: str, length: int = 8) -> str:
    """A short hash that changes when the weights change.

    For a hub id (or a directory inside the HF cache) this is the snapshot's commit; for a local
    directory, a sha256 over the names and bytes of its weights, configs and tokenizer files
    (memoised by size and mtime, so a multi-GB checkpoint is read once per process): a changed
    tokenizer changes outputs as surely as changed weights. ``"unknown"`` when neither exists.
    """
    commit = _hub_commit(source)
    if commit:
        return commit[:length]
    path = Path(source).expanduser()
    if not path.is_dir():
        return "unknown"
    if not _weight_files(path):
        return "unknown"
    files = _checkpoint_files(path)
    stamp = _files_stamp(path)
    cache_key = (str(path.resolve()), stamp)
    if cache_key not in _hash_cache:
        digest = hashlib.sha256()
        for file in files:
            digest.update(str(file.relative_to(path)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _hash_cache[cache_key] = digest.hexdigest()
    return _hash_cache[cache_key][:length]


def model_version(source: str, *, length: int = 8) -> str:
    """Provenance string ``"<name>@<hash>"``, e.g. ``"facebook/sam3@ab12cd34"``.

    ``name`` is the hub id (also for a directory inside the HF cache) or the local directory's
    name; ``hash`` is :func:`checkpoint_hash`.
    """
    match = _SNAPSHOT.search(str(Path(source).expanduser().resolve()))
    if match:
        name = match.group("repo").replace("--", "/", 1)
    elif Path(source).expanduser().exists():
        name = Path(source).expanduser().resolve().name
    else:
        name = source
    return f"{name}@{checkpoint_hash(source, length)}"
