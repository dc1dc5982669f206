"""The tiers a Cache chains: the default ones its arguments describe, or the ones it is given."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .envelope import envelope_tags
from .faults import Faults
from .memory import MemoryTier
from .tier import EventStream, Persistent, Tier, check_tiers, has, is_shared

if TYPE_CHECKING:
    from .events import Invalidations

__all__ = ["DEFAULTS", "check_picklable", "default_directory", "default_tiers", "given_tiers", "listen"]

# The arguments that describe the default tiers, with their defaults: with tiers= they are refused.
DEFAULTS: dict[str, Any] = dict(memory_maxsize=64 * 2**20, disk_size_limit=2**30, redis_url=None,
                                redis_prefix="llm_memo", disk=True, read_only=False)


def default_directory() -> Path:
    """$LLM_MEMO_DIR, else $XDG_CACHE_HOME/llm_memo, else ~/.cache/llm_memo."""
    env = os.environ.get("LLM_MEMO_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm_memo"


def default_tiers(directory: Path, options: dict[str, Any], clock: Callable[[], float] | None,
                  faults: Faults) -> list[Tier]:
    """Memory, then disk in `directory` (unless disk=False), then Redis when redis_url or
    $LLM_MEMO_REDIS_URL names a server. A disk that cannot be opened is a counted fault."""
    now = clock or time.time
    tiers: list[Tier] = [MemoryTier(options["memory_maxsize"], clock=now, timer=clock or time.monotonic,
                                    tags_of=envelope_tags)]
    if options["disk"]:
        from .disk import DiskTier  # diskcache and sqlite3 load only when a disk tier is wanted
        from .disk_read import ReadOnlyDiskTier

        try:
            tiers.append(ReadOnlyDiskTier(directory, clock=now) if options["read_only"]
                         else DiskTier(directory, size_limit=options["disk_size_limit"], clock=now))
        except Exception as exc:  # read-only or unusable directory: memory keeps working
            faults.fault("disk", "open", exc, None)
    url = options["redis_url"] or os.environ.get("LLM_MEMO_REDIS_URL")
    if url:
        try:
            from .redis import RedisTier
        except ImportError as exc:
            raise ImportError("a Redis tier needs the redis package: pip install 'llm_memo[redis]'") from exc
        tiers.append(RedisTier(url, prefix=options["redis_prefix"], clock=now))
    return tiers


def given_tiers(tiers: Sequence[Tier], directory: str | os.PathLike[str] | None,
                options: dict[str, Any]) -> tuple[list[Tier], Path]:
    """The checked `tiers=` and the cache's directory: `directory`, else that of a persistent
    tier among them, else the default one."""
    chosen = check_tiers(tiers)
    set_too = [name for name, default in DEFAULTS.items() if options[name] != default]
    if set_too:
        raise ValueError(f"{', '.join(set_too)} configure the default tiers, which tiers= replaces: configure "
                         "the tier objects you pass instead (or leave tiers=None)")
    persistent = [tier for tier in chosen if has(tier, Persistent)]
    if directory is None:
        return chosen, Path(persistent[0].directory) if persistent else default_directory()
    where = Path(directory).expanduser()
    if persistent and where.absolute() != Path(persistent[0].directory).absolute():
        raise ValueError(f"directory={str(directory)!r} is not the directory of the {persistent[0].name!r} tier "
                         f"({persistent[0].directory!r}): leave directory out, the cache keeps its records there")
    return chosen, where


def listen(tiers: Sequence[Tier], directory: Path | None,
           warn: Callable[[str, str, BaseException], None]) -> Invalidations | None:
    """With a shared event stream among `tiers`, started Invalidations: this cache's deletions reach
    the other machines' local tiers and theirs reach ours. `directory`: where the local disk tier
    keeps its files, if there is one."""
    stream = next((tier for tier in reversed(tiers) if has(tier, EventStream) and is_shared(tier)), None)
    if stream is None:
        return None
    from .events import Invalidations

    local = [tier for tier in tiers if not is_shared(tier)]
    invalidations = Invalidations(stream, local, directory, report=lambda op, exc: warn(stream.name, op, exc))
    invalidations.start()
    return invalidations


def check_picklable(tiers: Sequence[Tier]) -> None:
    """Raise TypeError naming the first of `tiers` that cannot be pickled, and the fix."""
    for position, tier in enumerate(tiers):
        try:
            pickle.dumps(tier)
        except Exception as exc:
            kind = type(tier).__name__
            raise TypeError(f"cannot pickle this Cache: its tiers[{position}] ({kind}, named {tier.name!r}) "
                            f"cannot be pickled ({exc}); give {kind} a __reduce__ that reopens it, or build "
                            "the Cache in the worker") from exc
