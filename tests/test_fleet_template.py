"""Seed 000 section 1's 24-node fleet and `deploy plan --from-slots` (issue 7 item 7).

`fleet init --template distributed-brain` writes the fleet file, read back with the ordinary
fleet loader. Slot assignment runs against a registry whose artifacts were registered from real
files (safetensors written by the official library, a JSON schema for the config artifacts) and
promoted raw -> validated -> production through the real lifecycle; the plan it gives is pushed to
the template's local nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import CliResult, RunBuilder, backdate
from modelyard.distribute.fleet import Fleet, load_fleet, parse_fleet
from modelyard.distribute.plan import read_plan
from modelyard.distribute.slots import SlotKey, assign_slots, slot_key
from modelyard.distribute.templates import (
    DISTRIBUTED_BRAIN,
    spread,
    template_fleet,
    write_template,
)
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.names import NODE_TYPES, Vocabulary
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

# Seed 000 section 1, typed out here (not imported from the template) so the test checks the code.
SEED_NODE_COUNTS = {
    "sensing": 4,
    "encoder": 4,
    "inference": 6,
    "decision": 2,
    "memory": 3,
    "learning": 1,
    "aggregation": 2,
    "management": 2,
}
SEED_ARTIFACTS = {
    "sensing": ["sensing-camera-preproc-v1", "sensing-audio-preproc-v1", "sensing-iot-normalizer-v1"],
    "encoder": [
        "vit-base16-embed-v1",
        "resnet50-proj-v1",
        "wav2vec2-base-embed-v1",
        "hubert-large-embed-v1",
        "sbert-all-mpnet-v1",
        "snn-dvs-embed-v1",
    ],
    "inference": [
        "gpt-small-v1",
        "gpt-medium-v1",
        "gpt-large-v1",
        "yolox-s-intel-v1",
        "fasterrcnn-res50-v1",
        "spiking-lm-core-v1",
        "multimodal-ensemble-v1",
        "rag-lite-v1",
    ],
    "decision": ["planner-rl-ppo-v1", "motor-controller-dnn-v1"],
    "memory": ["milvus-schema-v1", "minio-log-schema-v1"],
    "learning": ["trainer-ddp-manager-v1"],
    "aggregation": ["federator-agg-v1", "result-aggregator-v1"],
    "management": ["auth-service-v1", "monitoring-stack-v1"],
}
ALL_SLOTS = 26  # distinct (slot, node type) pairs of the template
CONFIG_RULE = "slots on memory, aggregation, management nodes take config artifacts"


def _slots_by_node(fleet: Fleet) -> dict[str, list[str]]:
    return {node.name: node.slots for node in fleet.nodes}


def _run_cli(home: Path, *args: str) -> CliResult:
    """The real `modelyard` in a subprocess against `home`."""
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    env.pop("MODELYARD_DB_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _one_line_error(result: CliResult, exit_code: int, *needles: str) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, result.stderr
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _write_yaml(path: Path, value: object) -> Path:
    writer = YAML(typ="safe", pure=True)
    writer.default_flow_style = False
    with path.open("w", encoding="utf-8") as handle:
        writer.dump(value, handle)
    return path


# == the template ===================================================================================


def test_the_template_is_24_nodes_with_the_seeds_counts_read_back_by_the_fleet_loader(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path, written = write_template(DISTRIBUTED_BRAIN, None, home)
    assert path == home / "fleet.yaml"
    fleet = load_fleet(None, home)  # the default fleet file, read as every deploy command reads it
    assert fleet.model_dump(exclude={"source"}) == written.model_dump(exclude={"source"})
    assert len(fleet.nodes) == 24
    assert Counter(node.node_type for node in fleet.nodes) == SEED_NODE_COUNTS
    assert [node.node_type for node in fleet.nodes] == [t for t in NODE_TYPES for _ in range(SEED_NODE_COUNTS[t])]
    for node in fleet.nodes:
        assert node.is_local and node.host == "local"
        assert node.models_root == str(home / "nodes" / node.name)
        assert node.slots, f"{node.name} has no slot"
    assert [node.name for node in fleet.select("type:encoder")] == [f"encoder-{n}" for n in range(1, 5)]
    assert path.read_text().startswith("# The distributed-brain fleet (seed 000 section 1)")


def test_each_node_type_holds_exactly_the_seeds_artifacts_for_it(tmp_path: Path) -> None:
    fleet = template_fleet(DISTRIBUTED_BRAIN, tmp_path)
    for node_type, artifacts in SEED_ARTIFACTS.items():
        held = [slot for node in fleet.nodes if node.node_type == node_type for slot in node.slots]
        assert sorted(set(held)) == sorted(artifacts), node_type
        # every artifact of the type is on a node; none is on a node of another type
        others = {slot for node in fleet.nodes if node.node_type != node_type for slot in node.slots}
        assert not others & set(artifacts), node_type


def test_more_artifacts_than_nodes_are_spread_round_robin_and_fewer_are_dealt_again(tmp_path: Path) -> None:
    slots = _slots_by_node(template_fleet(DISTRIBUTED_BRAIN, tmp_path))
    # six encoder artifacts over four nodes: the fifth and sixth go to the first two
    assert [slots[f"encoder-{n}"] for n in range(1, 5)] == [
        ["vit-base16-embed-v1", "sbert-all-mpnet-v1"],
        ["resnet50-proj-v1", "snn-dvs-embed-v1"],
        ["wav2vec2-base-embed-v1"],
        ["hubert-large-embed-v1"],
    ]
    assert [slots[f"inference-{n}"] for n in range(1, 7)] == [
        ["gpt-small-v1", "multimodal-ensemble-v1"],
        ["gpt-medium-v1", "rag-lite-v1"],
        ["gpt-large-v1"],
        ["yolox-s-intel-v1"],
        ["fasterrcnn-res50-v1"],
        ["spiking-lm-core-v1"],
    ]
    # three sensing artifacts over four nodes, two schemas over three memory nodes: dealt again
    assert slots["sensing-4"] == ["sensing-camera-preproc-v1"]
    assert [slots[f"memory-{n}"] for n in range(1, 4)] == [
        ["milvus-schema-v1"],
        ["minio-log-schema-v1"],
        ["milvus-schema-v1"],
    ]
    assert slots["learning-1"] == ["trainer-ddp-manager-v1"]
    assert slots["decision-2"] == ["motor-controller-dnn-v1"]


@pytest.mark.parametrize(
    ("artifacts", "count", "expected"),
    [
        (("a",), 1, [["a"]]),
        (("a", "b", "c", "d", "e"), 2, [["a", "c", "e"], ["b", "d"]]),
        (("a", "b"), 5, [["a"], ["b"], ["a"], ["b"], ["a"]]),
        (("a", "b", "c"), 3, [["a"], ["b"], ["c"]]),
    ],
)
def test_spread(artifacts: tuple[str, ...], count: int, expected: list[list[str]]) -> None:
    assert spread(artifacts, count) == expected


@pytest.mark.parametrize(("artifacts", "count"), [((), 3), (("a",), 0)])
def test_spread_refuses_an_empty_group(artifacts: tuple[str, ...], count: int) -> None:
    with pytest.raises(ValueError, match="at least one node and one artifact"):
        spread(artifacts, count)


def test_a_relative_models_root_is_made_absolute_and_normalised(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    fleet = template_fleet(DISTRIBUTED_BRAIN, Path("x/../edge"))
    assert fleet.node("learning-1").models_root == str(tmp_path / "edge" / "learning-1")


# -- the command -----------------------------------------------------------------------------------


def test_cli_fleet_init_writes_the_default_fleet_file_and_prints_every_node(
    cli: Callable[..., CliResult], home: Path
) -> None:
    result = cli("fleet", "init", "--template", "distributed-brain", check=True)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "TYPE", "MODELS", "ROOT", "SLOTS"]
    assert lines[5].split() == [
        "encoder-1",
        "encoder",
        str(home / "nodes" / "encoder-1"),
        "vit-base16-embed-v1,",
        "sbert-all-mpnet-v1",
    ]
    assert lines[-1] == (
        f"wrote {home / 'fleet.yaml'}: 24 nodes (sensing x4, encoder x4, inference x6, decision x2, memory x3, "
        "learning x1, aggregation x2, management x2)"
    )
    shown = cli("fleet", "show", "--json", check=True).json()
    assert len(shown["nodes"]) == 24
    assert shown["nodes"][16]["name"] == "memory-1" and shown["nodes"][16]["slots"] == ["milvus-schema-v1"]


def test_cli_fleet_init_to_another_file_and_models_root(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    target = tmp_path / "fleets" / "brain.yaml"
    result = cli(
        "fleet",
        "init",
        "--template",
        "distributed-brain",
        "--fleet",
        str(target),
        "--models-root",
        str(tmp_path / "srv"),
        "--json",
        check=True,
    )
    document = result.json()
    assert document["fleet"] == str(target) and document["template"] == "distributed-brain"
    assert [n["models_root"] for n in document["nodes"]][:2] == [str(tmp_path / "srv" / f"sensing-{n}") for n in (1, 2)]
    fleet = load_fleet(target, tmp_path / "unused-home")
    assert len(fleet.nodes) == 24
    assert not (tmp_path / "home" / "fleet.yaml").exists()
    assert not (tmp_path / "srv").exists()  # nothing is created on the nodes until a push


def test_an_existing_fleet_file_is_kept_unless_force(cli: Callable[..., CliResult], home: Path) -> None:
    existing = home / "fleet.yaml"
    existing.write_text("nodes:\n  - {name: jw2, host: local, models_root: /srv/models}\n")
    before = existing.read_bytes()
    refused = cli("fleet", "init", "--template", "distributed-brain")
    _one_line_error(refused, 5, str(existing), "the fleet file exists already; pass --force to replace it")
    assert refused.stdout == ""
    assert existing.read_bytes() == before
    replaced = cli("fleet", "init", "--template", "distributed-brain", "--force", check=True)
    assert replaced.stdout.endswith(
        "(sensing x4, encoder x4, inference x6, decision x2, memory x3, learning x1, aggregation x2, management x2)\n"
    )
    assert len(load_fleet(existing, home).nodes) == 24
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".fleet")) == []  # no temporary left


def test_the_api_refuses_an_existing_file_with_a_conflict(tmp_path: Path) -> None:
    path, _ = write_template(DISTRIBUTED_BRAIN, tmp_path / "f.yaml", tmp_path)
    first = path.read_text()
    with pytest.raises(ConflictError) as caught:
        write_template(DISTRIBUTED_BRAIN, path, tmp_path, models_root=tmp_path / "other")
    assert caught.value.path == str(path)
    assert path.read_text() == first
    write_template(DISTRIBUTED_BRAIN, path, tmp_path, models_root=tmp_path / "other", force=True)
    assert str(tmp_path / "other" / "sensing-1") in path.read_text()


@pytest.mark.parametrize("name", ["brain", "Distributed-Brain", ""])
def test_an_unknown_template_is_refused_naming_the_known_ones(
    cli: Callable[..., CliResult], home: Path, name: str
) -> None:
    result = cli("fleet", "init", "--template", name)
    _one_line_error(
        result, 3, "field '--template'", f"unknown fleet template {name!r}; the templates are: distributed-brain"
    )
    assert not (home / "fleet.yaml").exists()


def test_the_template_option_is_required(cli: Callable[..., CliResult], home: Path) -> None:
    result = cli("fleet", "init")
    assert result.returncode == 2 and "--template" in result.stderr
    assert not (home / "fleet.yaml").exists()


def test_a_directory_in_the_way_is_refused_even_with_force(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    directory = tmp_path / "taken"
    directory.mkdir()
    result = cli("fleet", "init", "--template", "distributed-brain", "--fleet", str(directory), "--force")
    _one_line_error(result, 3, str(directory), "field '--fleet'", "is a directory")
    assert list(directory.iterdir()) == []


# == slots in the fleet file ========================================================================


def _one_node(**extra: Any) -> dict[str, Any]:
    return {"nodes": [{"name": "mem1", "host": "local", "models_root": "/srv/models", **extra}]}


def test_slots_default_to_none_and_older_fleet_files_still_load() -> None:
    assert parse_fleet(_one_node(), "fleet.yaml").nodes[0].slots == []


@pytest.mark.parametrize(
    ("slots", "needles"),
    [
        (["Milvus Schema"], ["artifact name 'Milvus Schema': invalid character 'M' at position 1"]),
        (["milvus-schema"], ["must end with the major version '-v<N>'"]),
        (["milvus-schema-v1", "milvus-schema-v1"], ["slots must be unique; repeated: milvus-schema-v1"]),
        ("milvus-schema-v1", ["Input should be a valid list"]),
        ([1], ["Input should be a valid string"]),
    ],
)
def test_a_bad_slot_is_refused_naming_the_node_and_field(slots: object, needles: list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_fleet(_one_node(slots=slots), "fleet.yaml")
    assert caught.value.path == "fleet.yaml"
    assert (caught.value.field or "").startswith("nodes[mem1].slots")
    for needle in needles:
        assert needle in caught.value.message


def test_a_misspelt_slots_key_is_still_an_unknown_key() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_fleet(_one_node(slot=["milvus-schema-v1"]), "fleet.yaml")
    assert caught.value.field == "nodes[mem1].slot" and caught.value.message == "unknown key (a typo?)"


# == matching names to slots ========================================================================


@pytest.mark.parametrize(
    ("slot", "artifact"),
    [
        ("vit-base16-embed-v1", "vit-base16-embed-v1"),
        ("vit-base16-embed-v1", "vision-vit-base16-embed-v1"),  # the component prefix
        ("vit-base16-embed-v1", "vision-vit-base16-embed-int8-v1"),  # the quantization suffix
        ("vit-base16-embed-v1", "vit-base16-embed-nf4-v7"),  # another suffix and major
        ("gpt-small-v1", "gpt-small-v3"),  # a short name, another major
        ("gpt-small-v1", "gpt-small-int8-v1"),
        ("gpt-small-v1", "gpt-small-v1-lm-finetune-int8-v1"),  # seed 000's second example
        ("gpt-small-v1", "gpt-small-v2-classification-v1"),
        ("sbert-all-mpnet-v1", "text-sbert-all-mpnet-v1"),  # a short name with a component
        ("sbert-all-mpnet-v1", "text-sbert-all-mpnet-embed-v1"),
        ("milvus-schema-v1", "milvus-schema-v2"),
        ("vit-base16-embed-v1", "encoder.embed.vit-base16.run42.20251124T103000Z"),  # the automatic form
    ],
)
def test_names_that_fill_a_slot(slot: str, artifact: str) -> None:
    assert slot_key(slot).filled_by(slot_key(artifact)), (slot_key(slot), slot_key(artifact))


@pytest.mark.parametrize(
    ("slot", "artifact"),
    [
        ("vit-base16-embed-v1", "vit-base16-classification-v1"),  # another purpose
        ("vit-base16-embed-v1", "vit-large16-embed-v1"),  # another base model
        ("vit-base16-embed-v1", "vit-base16-v1"),  # no purpose where the slot names one
        ("gpt-small-v1", "gpt-medium-v1"),
        ("gpt-small-v1", "gpt-small-medium-v1"),
        ("milvus-schema-v1", "minio-log-schema-v1"),
        ("sensing-camera-preproc-v1", "sensing-audio-preproc-v1"),
    ],
)
def test_names_that_do_not_fill_a_slot(slot: str, artifact: str) -> None:
    assert not slot_key(slot).filled_by(slot_key(artifact))


def test_slot_keys_read_the_registry_vocabulary() -> None:
    vocabulary = Vocabulary().extended(purposes=["agg"])
    assert slot_key("federator-agg-v1") == SlotKey("federator-agg", None)
    assert slot_key("federator-agg-v1", vocabulary) == SlotKey("federator", "agg")
    assert slot_key("federator-agg-v1", vocabulary).filled_by(slot_key("federator-agg-int8-v2", vocabulary))


# == deploy plan --from-slots =======================================================================


@dataclass
class Brain:
    registry: Registry
    home: Path
    root: Path
    fleet_file: Path
    fleet: Fleet
    refs: dict[str, str]  # artifact name -> NAME@N of its production version (or its only version)


def _schema_dir(path: Path, collection: str) -> Path:
    """A vector DB schema as seed 000's memory nodes hold it: configuration documents, no weights."""
    path.mkdir(parents=True)
    fields = [{"name": "id", "type": "INT64", "is_primary": True}, {"name": "embedding", "type": "FLOAT_VECTOR"}]
    (path / "schema.json").write_text(json.dumps({"collection": collection, "dim": 768, "fields": fields}))
    (path / "index.yaml").write_text("index_type: HNSW\nmetric_type: COSINE\nparams: {M: 16, efConstruction: 200}\n")
    backdate(path)
    return path


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brain]:
    root = tmp_path_factory.mktemp("brain")
    home = root / "home"
    policy = root / "policy.json"
    policy.write_text(json.dumps({"checks": ["files_present", "readable", "pickles"]}))
    runs = RunBuilder(root / "runs")
    with Registry.open(home) as registry:

        def production(name: str, source: Path, checkpoint: str | None = "best") -> str:
            raw = registry.register(source, RegisterOptions(artifact_name=name)).version
            validated = registry.promote(raw.ref, "validated", checkpoint=checkpoint, policy=policy)
            return registry.promote(validated.ref, "production", version="1.0.0", approved_by="alice").ref

        refs = {
            "vision-vit-base16-embed-v1": production("vision-vit-base16-embed-v1", runs("vit", seed=1)),
            "vision-vit-base16-embed-int8-v2": production("vision-vit-base16-embed-int8-v2", runs("vit8", seed=2)),
            "gpt-small-v1-lm-finetune-v1": production("gpt-small-v1-lm-finetune-v1", runs("gpt", seed=3)),
            "milvus-schema-v1": production("milvus-schema-v1", _schema_dir(root / "milvus", "episodes"), None),
            # model weights under a management slot's name: passed over, that slot takes config artifacts
            "monitoring-stack-v1": production("monitoring-stack-v1", runs("mon", seed=4)),
            "resnet50-proj-v1": production("resnet50-proj-v1", runs("resnet", seed=5)),
        }
        registry.set_status(refs["resnet50-proj-v1"], "demoted", reason="regressed on the holdout set")
        # raw only: fills nothing
        refs["sbert-all-mpnet-v1"] = registry.register(
            runs("sbert", seed=6), RegisterOptions(artifact_name="sbert-all-mpnet-v1")
        ).version.ref
        fleet_file, fleet = write_template(DISTRIBUTED_BRAIN, None, home)
        yield Brain(registry, home, root, fleet_file, fleet, refs)


def test_production_artifacts_fill_the_slots_they_match(brain: Brain) -> None:
    assignment = assign_slots(brain.registry, brain.fleet)
    fills = {fill.slot: fill for fill in assignment.slots}
    assert len(assignment.slots) == ALL_SLOTS
    assert [fill.slot for fill in assignment.slots][:5] == [
        "sensing-camera-preproc-v1",
        "sensing-audio-preproc-v1",
        "sensing-iot-normalizer-v1",
        "vit-base16-embed-v1",  # encoder-1 holds vit-base16 and sbert (fleet order)
        "sbert-all-mpnet-v1",
    ]
    # the float and the -int8 artifact (another major too) both fill the vit-base16 slot
    assert fills["vit-base16-embed-v1"].artifacts == (
        brain.refs["vision-vit-base16-embed-int8-v2"],
        brain.refs["vision-vit-base16-embed-v1"],
    )
    assert fills["vit-base16-embed-v1"].nodes == ("encoder-1",)
    assert fills["gpt-small-v1"].artifacts == (brain.refs["gpt-small-v1-lm-finetune-v1"],)
    assert fills["gpt-small-v1"].nodes == ("inference-1",)
    # one schema, dealt to two memory nodes
    assert fills["milvus-schema-v1"].artifacts == (brain.refs["milvus-schema-v1"],)
    assert fills["milvus-schema-v1"].nodes == ("memory-1", "memory-3")
    assert fills["milvus-schema-v1"].takes == "config" and fills["vit-base16-embed-v1"].takes == "any"
    filled = {slot for slot, fill in fills.items() if not fill.empty}
    assert filled == {"vit-base16-embed-v1", "gpt-small-v1", "milvus-schema-v1"}


def test_empty_slots_are_reported_with_why_a_candidate_was_passed_over(brain: Brain) -> None:
    assignment = assign_slots(brain.registry, brain.fleet)
    empty = {fill.slot: fill for fill in assignment.empty_slots}
    assert len(empty) == ALL_SLOTS - 3
    assert "sbert-all-mpnet-v1" in empty  # only a raw version
    assert "resnet50-proj-v1" in empty  # its production version was demoted
    assert brain.registry.show(brain.refs["resnet50-proj-v1"]).stage == "production"
    monitoring = empty["monitoring-stack-v1"]
    assert monitoring.nodes == ("management-2",) and monitoring.takes == "config"
    monitoring_type = brain.registry.model_config(brain.refs["monitoring-stack-v1"])
    assert monitoring_type is not None and monitoring_type.model_type != "config"
    assert monitoring.passed_over == (
        f"{brain.refs['monitoring-stack-v1']}: model type {monitoring_type.model_type}; {CONFIG_RULE}",
    )
    document = assignment.to_dict()
    assert document["empty_slots"] == [fill.slot for fill in assignment.slots if fill.empty]
    assert document["slots"][3] == {
        "slot": "vit-base16-embed-v1",
        "takes": "any",
        "nodes": ["encoder-1"],
        "artifacts": [brain.refs["vision-vit-base16-embed-int8-v2"], brain.refs["vision-vit-base16-embed-v1"]],
        "passed_over": [],
        "empty": False,
    }


def test_the_assignments_pin_each_version_to_the_union_of_its_slots_nodes(brain: Brain) -> None:
    assignment = assign_slots(brain.registry, brain.fleet)
    found = {a.reference: (a.targets, a.source) for a in assignment.assignments}
    assert found == {
        brain.refs["gpt-small-v1-lm-finetune-v1"]: ("inference-1", "slot gpt-small-v1"),
        brain.refs["milvus-schema-v1"]: ("memory-1,memory-3", "slot milvus-schema-v1"),
        brain.refs["vision-vit-base16-embed-int8-v2"]: ("encoder-1", "slot vit-base16-embed-v1"),
        brain.refs["vision-vit-base16-embed-v1"]: ("encoder-1", "slot vit-base16-embed-v1"),
    }


def test_an_artifact_filling_slots_on_several_node_types_goes_to_all_of_them(brain: Brain, tmp_path: Path) -> None:
    document = {
        "nodes": [
            {
                "name": "enc",
                "host": "local",
                "node_type": "encoder",
                "models_root": "/srv/enc",
                "slots": ["vit-base16-embed-v1"],
            },
            {
                "name": "inf",
                "host": "local",
                "node_type": "inference",
                "models_root": "/srv/inf",
                "slots": ["gpt-small-v1", "vit-base16-embed-v7"],
            },
            {
                "name": "mgmt",
                "host": "local",
                "node_type": "management",
                "models_root": "/srv/m",
                "slots": ["gpt-small-v1"],
            },
        ]
    }
    fleet = parse_fleet(document, str(tmp_path / "fleet.yaml"))
    assignment = assign_slots(brain.registry, fleet)
    targets = {a.reference: (a.targets, a.source) for a in assignment.assignments}
    vit = brain.refs["vision-vit-base16-embed-v1"]
    assert targets[vit] == ("enc,inf", "slots vit-base16-embed-v1, vit-base16-embed-v7")
    # the same slot name on a management node takes config artifacts only: a separate slot
    gpt = {(fill.slot, fill.takes): fill for fill in assignment.slots}
    assert gpt[("gpt-small-v1", "any")].nodes == ("inf",)
    assert gpt[("gpt-small-v1", "config")].empty and gpt[("gpt-small-v1", "config")].passed_over
    assert targets[brain.refs["gpt-small-v1-lm-finetune-v1"]][0] == "inf"


def test_cli_plan_from_slots_prints_the_mapping_and_writes_the_plan(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "slots.json"
    result = _run_cli(brain.home, "deploy", "plan", "--from-slots", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SLOT", "TAKES", "ARTIFACT", "NODES"]
    rows = [line.split(None, 3) for line in lines[1 : ALL_SLOTS + 2]]  # vit-base16 has two rows
    assert ["vit-base16-embed-v1", "any", brain.refs["vision-vit-base16-embed-v1"], "encoder-1"] in rows
    assert ["vit-base16-embed-v1", "any", brain.refs["vision-vit-base16-embed-int8-v2"], "encoder-1"] in rows
    assert ["milvus-schema-v1", "config", brain.refs["milvus-schema-v1"], "memory-1, memory-3"] in rows
    assert ["sbert-all-mpnet-v1", "any", "(empty)", "encoder-1"] in rows
    assert ["monitoring-stack-v1", "config", "(empty)", "management-2"] in rows
    passed = [line for line in lines if line.startswith("passed over for ")]
    assert len(passed) == 1
    assert passed[0].startswith(
        f"passed over for monitoring-stack-v1: {brain.refs['monitoring-stack-v1']}: model type "
    )
    assert passed[0].endswith(f"; {CONFIG_RULE}")
    summary = next(line for line in lines if " slots empty: " in line)
    assert summary.startswith(f"{ALL_SLOTS - 3} of {ALL_SLOTS} slots empty: sensing-camera-preproc-v1, ")
    assert "resnet50-proj-v1" in summary and "vit-base16-embed-v1" not in summary
    assert lines[-1] == f"wrote {out} and {out.with_suffix('.md')}"
    assert any(
        line.startswith(f"{brain.refs['milvus-schema-v1']} -> memory-1, memory-3 as milvus-schema-v1: ")
        for line in lines
    )

    plan = read_plan(out)
    assert plan.fleet_file == str(brain.fleet_file) and plan.require_stage == "production"
    placed = {item.ref: [t.node for t in item.nodes] for item in plan.artifacts}
    assert placed == {
        brain.refs["gpt-small-v1-lm-finetune-v1"]: ["inference-1"],
        brain.refs["milvus-schema-v1"]: ["memory-1", "memory-3"],
        brain.refs["vision-vit-base16-embed-int8-v2"]: ["encoder-1"],
        brain.refs["vision-vit-base16-embed-v1"]: ["encoder-1"],
    }
    assert all(item.stage == "production" for item in plan.artifacts)
    assert "schema.json" in {f.path for f in plan.artifact(brain.refs["milvus-schema-v1"]).files}
    assert out.with_suffix(".md").read_text().startswith("# Model Distribution Manifest\n")


def test_cli_plan_from_slots_json_carries_the_slots_and_the_empty_ones(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "slots.json"
    result = _run_cli(brain.home, "deploy", "plan", "--from-slots", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    document = result.json()
    assert document["plan"] == str(out) and document["format"] == "modelyard-distribution-plan/1"
    assert len(document["slots"]) == ALL_SLOTS
    assert len(document["empty_slots"]) == ALL_SLOTS - 3
    assert "monitoring-stack-v1" in document["empty_slots"]
    milvus = next(slot for slot in document["slots"] if slot["slot"] == "milvus-schema-v1")
    assert milvus["artifacts"] == [brain.refs["milvus-schema-v1"]] and milvus["nodes"] == ["memory-1", "memory-3"]
    assert len(document["artifacts"]) == 4


def test_assignments_given_beside_from_slots_join_the_plan(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "both.json"
    sbert = brain.refs["sbert-all-mpnet-v1"]
    result = _run_cli(
        brain.home, "deploy", "plan", f"{sbert}=encoder-1", "--from-slots", "--require-stage", "raw", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    refs = {item.ref for item in read_plan(out).artifacts}
    assert sbert in refs and brain.refs["milvus-schema-v1"] in refs and len(refs) == 5


def test_without_assignments_or_from_slots_nothing_is_planned(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "none.json"
    result = _run_cli(brain.home, "deploy", "plan", "--out", str(out))
    _one_line_error(result, 3, "field 'ASSIGNMENT'", "give at least one ASSIGNMENT", "or --from-slots")
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_a_fleet_without_slots_is_refused(brain: Brain, tmp_path: Path) -> None:
    fleet_file = _write_yaml(
        tmp_path / "plain.yaml", {"nodes": [{"name": "jw2", "host": "local", "models_root": str(tmp_path / "jw2")}]}
    )
    out = tmp_path / "plain.json"
    result = _run_cli(brain.home, "deploy", "plan", "--from-slots", "--fleet", str(fleet_file), "--out", str(out))
    _one_line_error(
        result, 3, str(fleet_file), "no node of the fleet has slots", "fleet init --template distributed-brain"
    )
    assert not out.exists()


def test_a_registry_with_nothing_in_production_fills_no_slot(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    assert _run_cli(home, "fleet", "init", "--template", "distributed-brain").returncode == 0
    out = tmp_path / "empty.json"
    result = _run_cli(home, "deploy", "plan", "--from-slots", "--out", str(out))
    _one_line_error(
        result,
        4,
        str(home / "fleet.yaml"),
        f"no production version fills any slot of the fleet ({ALL_SLOTS} empty: sensing-camera-preproc-v1, ",
        "promote artifacts named after the slots",
    )
    assert not out.exists()
    with Registry.open(home) as registry, pytest.raises(NotFoundError):
        assign_slots(registry, registry.fleet()).require_some_filled()


def test_a_from_slots_plan_pushes_each_artifact_to_its_slots_nodes(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "push.json"
    assert _run_cli(brain.home, "deploy", "plan", "--from-slots", "--out", str(out)).returncode == 0
    pushed = _run_cli(brain.home, "deploy", "push", str(out), "--quiet")
    assert pushed.returncode == 0, (pushed.stdout, pushed.stderr)
    assert pushed.stdout.splitlines()[-1].startswith("done in ") and " 5 of 5 activated" in pushed.stdout
    nodes = brain.home / "nodes"
    schema = json.loads((brain.root / "milvus" / "schema.json").read_text())
    for node in ("memory-1", "memory-3"):
        assert json.loads((nodes / node / "milvus-schema-v1" / "schema.json").read_text()) == schema
    assert (nodes / "encoder-1" / "vision-vit-base16-embed-v1").is_symlink()
    assert (nodes / "encoder-1" / "vision-vit-base16-embed-int8-v2").is_symlink()
    assert (nodes / "inference-1" / "gpt-small-v1-lm-finetune-v1").is_symlink()
    assert sorted(p.name for p in nodes.iterdir()) == ["encoder-1", "inference-1", "memory-1", "memory-3"]
