"""Which params.yaml keys a piece of code reads: what a DVC stage depends on (tests/test_param_reads.py holds
dvc.yaml to it, both ways).

    with recording() as reads:          # every field read of the typed params (core/params.py), in any thread
        run_the_stage()
    reads                               # {"train.lr", "seed", "model", ...}

A leaf field read is its dotted key (`train.lr`); a section handed over whole (dumped, iterated, copied) is the
section's key (`model`), since everything in it may matter. Off by default: then a field read costs one global
lookup. Reads in other processes (a worker pool) are not seen: run stages with one worker when recording.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_READS: set[str] | None = None
_PATHS: dict[type, str] = {}


@contextmanager
def recording() -> Iterator[set[str]]:
    """Collect the keys read while the block runs (nested blocks each get their own set)."""
    global _READS
    outer, _READS = _READS, set()
    reads = _READS
    try:
        yield reads
    finally:
        _READS = outer
        if outer is not None:
            outer.update(reads)


@contextmanager
def paused() -> Iterator[None]:
    """Reads that are not the code's (the schema's own cross-checks while params load)."""
    global _READS
    outer, _READS = _READS, None
    try:
        yield
    finally:
        _READS = outer


def snapshot(params) -> dict:
    """params.model_dump(by_alias=True) that is not a read: a record of the settings (a model card, a resume
    fingerprint) or the source of a copy whose own reads are recorded."""
    with paused():
        return params.model_dump(by_alias=True)


def active() -> bool:
    return _READS is not None


def register(root: type, prefix: str = "") -> None:
    """Map each section class of the params schema to its dotted key (`TrainParams` -> `train`); core/params.py
    registers its root once it is defined."""
    _PATHS[root] = prefix
    for name, field in root.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            register(sub, f"{prefix}.{field.alias or name}" if prefix else field.alias or name)


def _path(cls: type) -> str:
    return _PATHS.get(cls, cls.__name__)


def note_field(obj, name: str, value) -> None:
    """A field of `obj` was read; sections (sub-models) count only through their own reads."""
    if _READS is None or hasattr(type(value), "model_fields"):
        return
    field = type(obj).model_fields[name]
    prefix = _path(type(obj))
    key = field.alias or name
    _READS.add(f"{prefix}.{key}" if prefix else key)


def note_whole(obj) -> None:
    """`obj` was dumped, iterated or copied: all of it."""
    if _READS is not None:
        _READS.add(_path(type(obj)) or "*")


class Recorded:
    """Mixin of the params models (core/params.py `_Strict`): field reads, iteration and dumps are noted while a
    `recording()` block runs."""

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if _READS is not None and name in type(self).model_fields:
            note_field(self, name, value)
        return value

    def __iter__(self):
        note_whole(self)
        return super().__iter__()

    def model_dump(self, **kwargs):
        note_whole(self)
        return super().model_dump(**kwargs)
