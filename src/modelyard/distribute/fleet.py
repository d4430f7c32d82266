"""The fleet file: which nodes exist, how to reach them, where they serve models from.

    nodes:
      - name: jw2
        host: 129.254.202.252        # or: local (this machine, no SSH)
        user: deploy
        port: 22
        identity_file: ~/.ssh/fleet_ed25519
        known_hosts: ~/.ssh/fleet_known_hosts
        node_type: inference
        models_root: /home/models
        base_models: {meta-llama/Llama-3.2-3B-Instruct: /home/models/llama32_3b}
        activate: systemctl reload vllm
        health: curl -fsS localhost:8000/health
        labels: {agent: cleaner}
        slots: [gpt-small-v1, rag-lite-v1]   # artifacts the node expects (deploy plan --from-slots)

`--fleet FILE` names it, else `<home>/fleet.yaml`. Unknown keys are errors (a typo such as
`heath:` must not silently disable a health check). Paths a node serves from are absolute, and
nothing a plan or this file names may leave the node's models root.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import NODE_TYPES, parse_name

FLEET_FILENAME = "fleet.yaml"
LOCAL = "local"
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Names a node's serving path may take (seed 004's llama32_3b_grammar_lora): one path segment.
_HOST = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]+:[0-9A-Fa-f:.]*)$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


class Node(BaseModel):
    """One machine of the fleet, as the fleet file describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    host: str
    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    identity_file: str | None = None
    known_hosts: str | None = None
    node_type: str | None = None
    models_root: str
    base_models: dict[str, str] = Field(default_factory=dict)
    activate: str | None = None
    health: str | None = None
    health_timeout: float = Field(default=60.0, gt=0, le=3600)
    activate_timeout: float = Field(default=300.0, gt=0, le=3600)
    labels: dict[str, str] = Field(default_factory=dict)
    python: str = "python3"  # the interpreter that runs modelyard's one-file agent on the node
    keep_versions: int = Field(default=2, ge=1, le=100)  # verified versions kept for rollback
    slots: list[str] = Field(default_factory=list)  # artifact names the node expects (deploy plan --from-slots)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NODE_NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '.', '_' or '-' (at most 63 characters)")
        return value

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        # A host or user starting with '-' would reach ssh as an option.
        if not _HOST.match(value):
            raise ValueError(f"{value!r} must be a host name, an IP address, or 'local'")
        return value

    @field_validator("user")
    @classmethod
    def _plain_user(cls, value: str | None) -> str | None:
        if value is not None and not _USER.match(value):
            raise ValueError(f"{value!r} must be a user name (letters, digits, '.', '_', '-'; not starting with '-')")
        return value

    @field_validator("node_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in NODE_TYPES:
            raise ValueError(f"unknown node type {value!r}; use one of {', '.join(NODE_TYPES)}")
        return value

    @field_validator("models_root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        normal = posixpath.normpath(value)
        if (
            not value.startswith("/")
            or value.startswith("//")
            or normal != (value.rstrip("/") or "/")
            or "\x00" in value
        ):
            raise ValueError(f"{value!r} must be an absolute, normalised path such as /home/models")
        return value.rstrip("/") or "/"

    @field_validator("base_models")
    @classmethod
    def _absolute_base_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for base, path in value.items():
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"the path of {base!r} must be absolute without '..', not {path!r}")
        return value

    @field_validator("slots")
    @classmethod
    def _named_slots(cls, value: list[str]) -> list[str]:
        for slot in value:
            try:
                parse_name(slot)
            except InvalidInputError as exc:
                # Raised as ValueError so the message reaches the user with the node and field.
                raise ValueError(exc.message) from None
        repeated = sorted({slot for slot in value if value.count(slot) > 1})
        if repeated:
            raise ValueError(f"slots must be unique; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _ssh_needs_a_host_key(self) -> Node:
        if self.host != LOCAL and not self.known_hosts:
            # An unknown host key is refused, never trusted: the fleet file names the file that
            # holds each node's key (ssh's StrictHostKeyChecking=yes against it).
            raise ValueError("a remote node needs known_hosts: the file holding its SSH host key")
        return self

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL

    def serving_path(self, target_name: str) -> str:
        """`<models_root>/<target_name>`: where the node's server reads the model."""
        return posixpath.join(self.models_root, check_target_name(target_name))

    def address(self) -> str:
        return self.host if self.user is None else f"{self.user}@{self.host}"


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: list[Node] = Field(min_length=1)
    source: str = ""  # the file it was read from, for messages

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        names = [node.name for node in self.nodes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"node names must be unique; repeated: {', '.join(repeated)}")
        return self

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise NotFoundError(f"the fleet has no node {name!r}; its nodes: {', '.join(n.name for n in self.nodes)}")

    def select(self, targets: str) -> list[Node]:
        """Nodes named by a comma-separated list of node names, `type:NODE_TYPE` and
        `label:KEY=VALUE` (the union, in fleet order). Every part must match some node."""
        chosen: dict[str, Node] = {}
        for part in (p.strip() for p in targets.split(",")):
            if not part:
                raise InvalidInputError(f"empty target in {targets!r}", field="targets")
            matched = self._match(part)
            if not matched:
                raise NotFoundError(f"no node matches {part!r} (nodes: {', '.join(n.name for n in self.nodes)})")
            for node in matched:
                chosen[node.name] = node
        return [node for node in self.nodes if node.name in chosen]

    def _match(self, part: str) -> list[Node]:
        if part.startswith("type:"):
            wanted = part[len("type:") :]
            if wanted not in NODE_TYPES:
                raise InvalidInputError(f"unknown node type {wanted!r} in {part!r}", field="targets")
            return [node for node in self.nodes if node.node_type == wanted]
        if part.startswith("label:"):
            key, sep, value = part[len("label:") :].partition("=")
            if not sep or not key:
                raise InvalidInputError(f"{part!r} must read label:KEY=VALUE", field="targets")
            return [node for node in self.nodes if node.labels.get(key) == value]
        return [node for node in self.nodes if node.name == part] or _unknown_node(part, self)


def _unknown_node(name: str, fleet: Fleet) -> list[Node]:
    raise NotFoundError(f"the fleet has no node {name!r}; its nodes: {', '.join(n.name for n in fleet.nodes)}")


def check_target_name(name: str) -> str:
    """A serving directory name: one path segment, never `.`/`..`, no separators."""
    if not _TARGET_NAME.match(name) or name in (".", ".."):
        raise InvalidInputError(
            f"target name {name!r} must be one directory name (letters, digits, '.', '_', '-', '@', '+')",
            field="target_name",
        )
    return name


def load_fleet(path: Path | None, home: Path) -> Fleet:
    """The fleet file given, else `<home>/fleet.yaml`."""
    from modelyard.loaders import load_document

    fleet_path = path if path is not None else home / FLEET_FILENAME
    if not fleet_path.exists():
        hint = "pass --fleet FILE" if path is None else "check the path"
        raise InvalidInputError(f"no fleet file ({hint}; the default is {home / FLEET_FILENAME})", path=fleet_path)
    document = load_document(fleet_path)
    if not isinstance(document, dict):
        raise InvalidInputError("a fleet file holds a mapping with a 'nodes' list", path=fleet_path)
    return parse_fleet(document, str(fleet_path))


def parse_fleet(document: dict[str, Any], source: str) -> Fleet:
    expanded = dict(document)
    nodes = expanded.get("nodes")
    if isinstance(nodes, list):
        expanded["nodes"] = [_expand_user(node) for node in nodes]
    try:
        return Fleet.model_validate({**expanded, "source": source})
    except ValidationError as exc:
        error = exc.errors()[0]
        location = _location(error["loc"], expanded)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        raise InvalidInputError(message, path=source, field=location) from None


def _expand_user(node: Any) -> Any:
    """`~` in the local files (identity, known_hosts) means this user's home."""
    if not isinstance(node, dict):
        return node
    expanded = dict(node)
    for key in ("identity_file", "known_hosts"):
        value = expanded.get(key)
        if isinstance(value, str):
            expanded[key] = str(Path(value).expanduser())
    return expanded


def _location(loc: tuple[int | str, ...], document: dict[str, Any]) -> str:
    """`nodes[2].health_timeout`, naming the node when it has a name: `nodes[jw2].port`."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int) and index > 0 and loc[index - 1] == "nodes":
            nodes = document.get("nodes")
            name = (
                nodes[part].get("name")
                if isinstance(nodes, list) and part < len(nodes) and isinstance(nodes[part], dict)
                else None
            )
            parts[-1] += f"[{name or part}]"
        elif isinstance(part, int):
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"
