"""``SampleCodec``: what the stream calls to turn a sample's ``json`` member into batch fields (each task has one)."""

from __future__ import annotations

from typing import Any, Protocol


class SampleCodec(Protocol):
    """Turns a sample's ``json`` member into the task's fields of a batch. Runs in loader workers: it must
    pickle (plain attributes; a tokenizer is loaded lazily on first use in the worker)."""

    def parse(self, meta: dict[str, Any], key: str) -> Any:
        """One sample's targets (labels, questions, captions...). Raise ``ValueError`` with the reason for a
        malformed record: the stream skips the sample and counts it (it never stops the run)."""
        ...

    def collate(self, targets: list[Any]) -> dict[str, Any]:
        """The parsed targets of a batch's samples, in order -> batch fields (tensors, lists). Called with
        ``[]`` for a batch whose samples were all skipped: return the same fields, empty."""
        ...
