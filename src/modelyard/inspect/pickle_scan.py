"""The verdict on a pickle: safe, suspicious or unsafe, by the globals it would import.

`scan_pickle` replays a pickle symbolically (`pickles.py`, nothing is unpickled) and ranks every
global it names with `pickle_globals.classify_global`: on the allow-list of plain tensor
checkpoints is safe, a known code-executing or system-reaching import is unsafe (so is a global
that cannot be named statically), anything else is suspicious. `combine` merges the scans of
several pickles (the members of a torch zip), and `apply_policy` lets a lifecycle policy's
audited exceptions turn suspicious findings into allowed ones (never unsafe ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickle_globals import classify_global
from modelyard.inspect.pickles import GlobalRef, SimulatedPickle, simulate_pickle

Verdict = Literal["safe", "suspicious", "unsafe"]
FindingSeverity = Literal["allowed", "suspicious", "unsafe"]


@dataclass(frozen=True)
class PickleFinding:
    """One global outside the allow-list: where it first appears (`member` of a zip or None for a
    plain file; `position` = byte offset of its opcode) and why it ranks as it does."""

    module: str
    name: str
    severity: FindingSeverity
    member: str | None
    position: int
    reason: str

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class PickleScan:
    """The verdict over one or more pickles. `globals` lists every distinct (module, name) named,
    safe ones included, in order of first appearance; `findings` only the non-safe ones."""

    verdict: Verdict
    findings: tuple[PickleFinding, ...]
    globals: tuple[tuple[str, str], ...]
    pickles_scanned: int


def scan_pickle(source: ByteSource, offset: int, length: int, member: str | None = None) -> PickleScan:
    """Replay the pickle at `offset` (at most `length` bytes) and rank the globals it names."""
    return scan_simulated(simulate_pickle(source, offset, length, member), member)


def scan_simulated(simulated: SimulatedPickle, member: str | None = None) -> PickleScan:
    """The scan of an already simulated pickle (for readers that also need its value)."""
    return scan_globals(simulated.globals, member)


def scan_globals(references: Iterable[GlobalRef], member: str | None = None) -> PickleScan:
    findings: dict[tuple[str, str, str], PickleFinding] = {}
    named: dict[tuple[str, str], None] = {}
    for reference in references:
        named.setdefault((reference.module, reference.name), None)
        finding = _finding(reference, member)
        if finding is not None:
            findings.setdefault((finding.module, finding.name, finding.reason), finding)
    return _scan(tuple(findings.values()), tuple(named), 1)


def combine(scans: Iterable[PickleScan]) -> PickleScan:
    """One scan over several pickles: every finding and global, the worst verdict."""
    findings: list[PickleFinding] = []
    named: dict[tuple[str, str], None] = {}
    count = 0
    for scan in scans:
        findings.extend(scan.findings)
        named.update(dict.fromkeys(scan.globals))
        count += scan.pickles_scanned
    return _scan(tuple(findings), tuple(named), count)


def apply_policy(scan: PickleScan, allowed_globals: Iterable[str]) -> PickleScan:
    """Mark suspicious findings named in `allowed_globals` ("module.name", a policy's audited
    exceptions) as "allowed" and recompute the verdict. Unsafe findings are never allowed."""
    allowed = frozenset(allowed_globals)
    findings = tuple(
        replace(finding, severity="allowed", reason=f"allowed by policy; {finding.reason}")
        if finding.severity == "suspicious" and finding.qualified in allowed
        else finding
        for finding in scan.findings
    )
    return _scan(findings, scan.globals, scan.pickles_scanned)


def _finding(reference: GlobalRef, member: str | None) -> PickleFinding | None:
    if not reference.resolved:
        reason = f"cannot be resolved statically: {reference.note}"
        return PickleFinding(reference.module, reference.name, "unsafe", member, reference.position, reason)
    severity, reason = classify_global(reference.module, reference.name)
    if severity == "safe":
        return None
    return PickleFinding(reference.module, reference.name, severity, member, reference.position, reason)


def _scan(findings: tuple[PickleFinding, ...], named: tuple[tuple[str, str], ...], count: int) -> PickleScan:
    return PickleScan(_verdict(findings), findings, named, count)


def _verdict(findings: Iterable[PickleFinding]) -> Verdict:
    worst: Verdict = "safe"
    for finding in findings:
        if finding.severity == "unsafe":
            return "unsafe"
        if finding.severity == "suspicious":
            worst = "suspicious"
    return worst
