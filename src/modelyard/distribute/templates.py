"""Fleet templates: fleet files written by `modelyard fleet init --template NAME`.

`distributed-brain` is seed 000 section 1's 24-node configuration: eight node types, each with
the artifacts seed 000 names for it. Every node gets the `slots` (artifact names) it expects, so
`modelyard deploy plan --from-slots` can assign the production artifacts that fill them. Where the
seed names more artifacts than a type has nodes (six encoders over four encoder nodes), they are
dealt round-robin; where it names fewer (three sensing artifacts, four sensing nodes), the
artifacts are dealt again, so every node has at least one slot.

The seed gives no node names: nodes are `<node_type>-<n>` (`encoder-1` ... `encoder-4`). Every
node is `host: local` with its models root at `<models root>/<node name>`, which is enough to try
a whole distribution on one machine; edit `host`, `user` and `known_hosts` to reach real machines.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelyard.distribute.fleet import FLEET_FILENAME, LOCAL, Fleet, parse_fleet
from modelyard.errors import ConflictError, InvalidInputError

DISTRIBUTED_BRAIN: Final = "distributed-brain"
DEFAULT_NODES_DIRNAME: Final = "nodes"  # <home>/nodes/<node>: the models roots of a local template fleet


@dataclass(frozen=True)
class NodeGroup:
    """The nodes of one type in a template and the artifacts (seed 000's names) they serve."""

    node_type: str
    count: int
    artifacts: tuple[str, ...]


# Seed 000 section 1, in its order.
DISTRIBUTED_BRAIN_GROUPS: Final[tuple[NodeGroup, ...]] = (
    NodeGroup("sensing", 4, ("sensing-camera-preproc-v1", "sensing-audio-preproc-v1", "sensing-iot-normalizer-v1")),
    NodeGroup(
        "encoder",
        4,
        (
            "vit-base16-embed-v1",
            "resnet50-proj-v1",
            "wav2vec2-base-embed-v1",
            "hubert-large-embed-v1",
            "sbert-all-mpnet-v1",
            "snn-dvs-embed-v1",
        ),
    ),
    NodeGroup(
        "inference",
        6,
        (
            "gpt-small-v1",
            "gpt-medium-v1",
            "gpt-large-v1",
            "yolox-s-intel-v1",
            "fasterrcnn-res50-v1",
            "spiking-lm-core-v1",
            "multimodal-ensemble-v1",
            "rag-lite-v1",
        ),
    ),
    NodeGroup("decision", 2, ("planner-rl-ppo-v1", "motor-controller-dnn-v1")),
    NodeGroup("memory", 3, ("milvus-schema-v1", "minio-log-schema-v1")),
    NodeGroup("learning", 1, ("trainer-ddp-manager-v1",)),
    NodeGroup("aggregation", 2, ("federator-agg-v1", "result-aggregator-v1")),
    NodeGroup("management", 2, ("auth-service-v1", "monitoring-stack-v1")),
)

TEMPLATES: Final[dict[str, tuple[NodeGroup, ...]]] = {DISTRIBUTED_BRAIN: DISTRIBUTED_BRAIN_GROUPS}


def template_groups(name: str) -> tuple[NodeGroup, ...]:
    """The node groups of a template; InvalidInputError naming the known templates otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown fleet template {name!r}; the templates are: {', '.join(TEMPLATES)}", field="--template"
        ) from None


def spread(artifacts: tuple[str, ...], count: int) -> list[list[str]]:
    """Deal `artifacts` over `count` nodes round-robin: artifact i goes to node i mod count, and
    when there are fewer artifacts than nodes the artifacts are dealt again until every node has one.

    >>> spread(("a", "b", "c"), 2)
    [['a', 'c'], ['b']]
    >>> spread(("a", "b"), 3)
    [['a'], ['b'], ['a']]
    """
    if count < 1 or not artifacts:
        raise ValueError("a node group needs at least one node and one artifact")
    slots: list[list[str]] = [[] for _ in range(count)]
    for index in range(max(len(artifacts), count)):
        slots[index % count].append(artifacts[index % len(artifacts)])
    return slots


def template_document(name: str, models_root: Path) -> dict[str, Any]:
    """The fleet file of template `name` as a mapping: `{"nodes": [...]}`, each node local, with
    its models root at `models_root/<node name>` and its slots."""
    root = Path(os.path.abspath(models_root))  # absolute and normalised, as the fleet file requires
    nodes: list[dict[str, Any]] = []
    for group in template_groups(name):
        for number, slots in enumerate(spread(group.artifacts, group.count), start=1):
            node_name = f"{group.node_type}-{number}"
            nodes.append(
                {
                    "name": node_name,
                    "host": LOCAL,
                    "node_type": group.node_type,
                    "models_root": str(root / node_name),
                    "slots": slots,
                }
            )
    return {"nodes": nodes}


def template_fleet(name: str, models_root: Path) -> Fleet:
    """Template `name` as a validated Fleet (nothing is written)."""
    return parse_fleet(template_document(name, models_root), f"template {name}")


def default_models_root(home: Path) -> Path:
    """Where a template fleet's local nodes keep their models unless told: `<home>/nodes`."""
    return home / DEFAULT_NODES_DIRNAME


def write_template(
    name: str, fleet_path: Path | None, home: Path, *, models_root: Path | None = None, force: bool = False
) -> tuple[Path, Fleet]:
    """Write template `name` as a fleet file: `fleet_path`, else `<home>/fleet.yaml`.

    The nodes' models roots lie under `models_root`, else `<home>/nodes`. An existing file is
    refused (ConflictError) unless `force`; the file is validated as `load_fleet` will read it
    before it is written, and written whole or not at all. Returns the path and the fleet."""
    from modelyard.fsutil import write_text_atomically

    path = fleet_path if fleet_path is not None else home / FLEET_FILENAME
    document = template_document(name, models_root if models_root is not None else default_models_root(home))
    fleet = parse_fleet(document, str(path))
    if path.is_dir():
        raise InvalidInputError("is a directory; give the fleet file's path", path=path, field="--fleet")
    if path.exists() and not force:
        raise ConflictError("the fleet file exists already; pass --force to replace it", path=path)
    write_text_atomically(path, _header(name) + _yaml(document))
    return path, fleet


def _header(name: str) -> str:
    return (
        f"# The {name} fleet (seed 000 section 1), written by `modelyard fleet init --template {name}`.\n"
        "# Every node is `host: local`; give a node host, user and known_hosts to reach a real machine.\n"
        "# `slots` are the artifacts each node expects: `modelyard deploy plan --from-slots` fills them\n"
        "# with production versions.\n"
    )


def _yaml(document: dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep `name` first
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()
