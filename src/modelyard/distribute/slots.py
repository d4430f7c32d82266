"""Filling the fleet's slots with production artifacts: `modelyard deploy plan --from-slots`.

A node's `slots` (fleet file) name the artifacts it expects, in seed 000's words
(`vit-base16-embed-v1`). A production artifact fills a slot when both names, parsed with the
registry's vocabulary (modelyard.names), have the same base model and purpose; the component
prefix (`vision-`), the quantization suffix (`-int8`) and the major (`-v2`) do not matter, and
neither does a `-v<N>` ending the base model itself (`gpt-small-v1-lm-finetune-v1` is built on
the `gpt-small` of slot `gpt-small-v1`). A slot named without a purpose (`gpt-small-v1`,
`sbert-all-mpnet-v1`) is filled by any purpose on that base model.

Every artifact whose newest active production version fills a slot goes to every node holding the
slot (a float and an `-int8` artifact both fill `vit-base16-embed-v1`, each under its own serving
path). Slots on memory, aggregation and management nodes take `config` artifacts only (schemas,
service configurations): a model registered under such a slot's name is passed over, and said so.
Slots nothing fills are reported, not refused: the plan holds what is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from modelyard.distribute.plan import Assignment
from modelyard.domain import ListFilters
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import Vocabulary, parse_name

if TYPE_CHECKING:
    from modelyard.distribute.fleet import Fleet
    from modelyard.domain import VersionRecord
    from modelyard.registry import Registry

# Seed 000 section 1: these nodes hold configuration (vector DB schemas, log schemas, aggregation
# protocols, service configurations), not model weights.
CONFIG_NODE_TYPES: Final = ("memory", "aggregation", "management")
_MAJOR_SUFFIX = re.compile(r"-v(?:0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class SlotKey:
    """What a name says for slot matching: its base model (without component or `-v<N>`) and
    purpose (None for a short name such as `gpt-small-v1`)."""

    base_model: str
    purpose: str | None

    def filled_by(self, artifact: SlotKey) -> bool:
        """Whether an artifact with key `artifact` fills a slot with this key."""
        return self.base_model == artifact.base_model and self.purpose in (None, artifact.purpose)


def slot_key(name: str, vocabulary: Vocabulary | None = None) -> SlotKey:
    """The key of a slot or artifact name: `vision-vit-base16-embed-int8-v2` -> (vit-base16, embed),
    `gpt-small-v1` -> (gpt-small, None), `gpt-small-v1-lm-finetune-v1` -> (gpt-small, lm-finetune).
    Raises InvalidInputError for a name the grammar refuses."""
    vocab = vocabulary or Vocabulary()
    parsed = parse_name(name, vocab)
    tokens = (parsed.base_model or "").split("-")
    # A short name keeps its component among the base model's words (`text-sbert-all-mpnet-v1`).
    if parsed.form == "short" and len(tokens) > 1 and tokens[0] in vocab.components:
        tokens = tokens[1:]
    base = _MAJOR_SUFFIX.sub("", "-".join(tokens)) or "-".join(tokens)
    return SlotKey(base, parsed.purpose)


@dataclass(frozen=True)
class SlotFill:
    """One slot name on the nodes that hold it, and the production versions filling it."""

    slot: str
    takes: str  # "config" (memory, aggregation, management nodes) or "any"
    nodes: tuple[str, ...]
    artifacts: tuple[str, ...] = ()  # NAME@N of each filling version
    passed_over: tuple[str, ...] = ()  # "NAME@N: why it does not fill the slot"

    @property
    def empty(self) -> bool:
        return not self.artifacts

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "takes": self.takes,
            "nodes": list(self.nodes),
            "artifacts": list(self.artifacts),
            "passed_over": list(self.passed_over),
            "empty": self.empty,
        }


@dataclass(frozen=True)
class SlotAssignment:
    """Every slot of a fleet with what fills it, and the plan assignments that follow from it."""

    fleet_file: str
    slots: tuple[SlotFill, ...]
    assignments: tuple[Assignment, ...] = field(default=())

    @property
    def empty_slots(self) -> list[SlotFill]:
        return [fill for fill in self.slots if fill.empty]

    def require_some_filled(self) -> None:
        """NotFoundError when no production version fills any slot: there is nothing to plan."""
        if self.assignments:
            return
        names = ", ".join(fill.slot for fill in self.slots)
        raise NotFoundError(
            f"no production version fills any slot of the fleet ({len(self.slots)} empty: {names}); "
            "promote artifacts named after the slots (e.g. vision-vit-base16-embed-v1 for vit-base16-embed-v1)",
            path=self.fleet_file,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": [fill.to_dict() for fill in self.slots],
            "empty_slots": [fill.slot for fill in self.empty_slots],
        }


@dataclass(frozen=True)
class _Candidate:
    version: VersionRecord
    key: SlotKey
    model_type: str | None


def assign_slots(registry: Registry, fleet: Fleet) -> SlotAssignment:
    """Match the newest active production version of every artifact against the fleet's slots.

    Returns each slot (in fleet order) with the versions filling it and those passed over, and one
    assignment per filling version (`NAME@N` to every node whose slot it fills), ready for
    `registry.plan_deployment`. Raises InvalidInputError when no node of the fleet has slots."""
    groups = _slot_groups(fleet)
    if not groups:
        raise InvalidInputError(
            "no node of the fleet has slots; add `slots:` to its nodes, or write the 24-node fleet with "
            "`modelyard fleet init --template distributed-brain`",
            path=fleet.source,
        )
    vocabulary = registry.settings.vocabulary
    candidates = _production_candidates(registry, vocabulary)
    fills = [_fill(slot, takes, nodes, candidates, vocabulary) for (slot, takes), nodes in groups.items()]
    return SlotAssignment(fleet_file=fleet.source, slots=tuple(fills), assignments=_assignments(fills, fleet))


def _slot_groups(fleet: Fleet) -> dict[tuple[str, str], list[str]]:
    """(slot name, what it takes) -> the nodes holding it, in fleet order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for node in fleet.nodes:
        takes = "config" if node.node_type in CONFIG_NODE_TYPES else "any"
        for slot in node.slots:
            groups.setdefault((slot, takes), []).append(node.name)
    return groups


def _production_candidates(registry: Registry, vocabulary: Vocabulary) -> list[_Candidate]:
    """The newest active production version of each artifact that has one, with its slot key."""
    summaries = registry.list(ListFilters(stage="production"), all_versions=True)
    candidates: list[_Candidate] = []
    for name in sorted({summary.artifact_name for summary in summaries}):
        try:
            version = registry.show(f"{name}@production")
            key = slot_key(name, vocabulary)
        except (NotFoundError, InvalidInputError):
            # Every production version demoted or deprecated, or a name the current vocabulary
            # no longer reads: it fills no slot.
            continue
        config = registry.model_config(version.ref)
        candidates.append(_Candidate(version, key, config.model_type if config is not None else None))
    return candidates


def _fill(slot: str, takes: str, nodes: list[str], candidates: list[_Candidate], vocabulary: Vocabulary) -> SlotFill:
    # Slots and artifacts are read with the same words, so a purpose the registry's config.toml
    # adds splits both alike; the fleet file checked the slot with the default vocabulary.
    try:
        key = slot_key(slot, vocabulary)
    except InvalidInputError:
        key = slot_key(slot)
    filling: list[str] = []
    passed_over: list[str] = []
    for candidate in candidates:
        if not key.filled_by(candidate.key):
            continue
        if takes == "config" and candidate.model_type != "config":
            kind = candidate.model_type or "unknown (registered without inspection)"
            passed_over.append(
                f"{candidate.version.ref}: model type {kind}; "
                f"slots on {', '.join(CONFIG_NODE_TYPES)} nodes take config artifacts"
            )
            continue
        filling.append(candidate.version.ref)
    return SlotFill(slot, takes, tuple(nodes), tuple(filling), tuple(passed_over))


def _assignments(fills: list[SlotFill], fleet: Fleet) -> tuple[Assignment, ...]:
    """One assignment per filling version, pinned to the version matched (`NAME@N`, so the plan
    holds exactly the mapping printed): to the union of its slots' nodes, in fleet order."""
    nodes_of: dict[str, set[str]] = {}
    slots_of: dict[str, list[str]] = {}
    for fill in fills:
        for ref in fill.artifacts:
            nodes_of.setdefault(ref, set()).update(fill.nodes)
            slots_of.setdefault(ref, []).append(fill.slot)
    assignments = []
    for ref in sorted(nodes_of):
        targets = ",".join(node.name for node in fleet.nodes if node.name in nodes_of[ref])
        source = f"slot{'s' if len(slots_of[ref]) > 1 else ''} {', '.join(slots_of[ref])}"
        assignments.append(Assignment(ref, targets, source=source))
    return tuple(assignments)
