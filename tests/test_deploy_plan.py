"""Fleet distribution planning (seed 004): the fleet file, target selection, assignments, the plan
and its refusals, reading a plan back, the node agent on a local directory, the POSIX shell agent,
and the status report.

Nothing here needs SSH: the agent's commands run in-process on a temporary "node" directory, the
shell agent runs against a `host: local` node, and the one push round trip goes to a local node.
Every artifact is registered from real files (safetensors written by the official library, JSON
shaped like what transformers and PEFT write, real pickles for training state).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import platform
import posixpath
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from conftest import CliResult, RunBuilder, backdate, write_safetensors
from model_builders import llama_folder, peft_folder, safetensors_file
from modelyard.catalog.deployments import DeploymentKey
from modelyard.distribute import agent
from modelyard.distribute.agent import AgentError
from modelyard.distribute.fleet import Fleet, Node, check_target_name, load_fleet, parse_fleet
from modelyard.distribute.plan import (
    Assignment,
    DistributionPlan,
    build_plan,
    describe_version,
    load_assignments,
    parse_assignment,
    read_plan,
    version_dir_name,
)
from modelyard.distribute.remote import AgentRefused, ShellAgent
from modelyard.distribute.report import current_deployments, plan_markdown, status_markdown, status_matrix
from modelyard.distribute.transport import NodeConnection
from modelyard.domain import VersionRecord
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import MANIFEST_FILENAME, NODE_TYPES, parse_reference
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

SEED_004_BASE = "meta-llama/Llama-3.2-3B-Instruct"
# A base model the registry holds as tiny-llama-v1 (its last part, slugged, with -v<N>).
REGISTERED_BASE = "acme/Tiny-Llama"
TEMPLATE = "rsync -a --partial <src>/ <node>:<dst>/"
FAST = settings(max_examples=100, deadline=None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pickle(path: Path, value: object) -> None:
    """Training state as a real pickle (what torch.save writes for plain containers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=2))


def _write_yaml(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = YAML(typ="safe", pure=True)
    writer.default_flow_style = False
    with path.open("w", encoding="utf-8") as handle:
        writer.dump(value, handle)
    return path


def _error(action: Callable[[], object], kind: type[Exception]) -> Exception:
    """The exception `action` raises, which must be exactly of class `kind` (or a subclass)."""
    with pytest.raises(kind) as caught:
        action()
    return caught.value


def _one_line_error(result: CliResult, exit_code: int, *needles: str) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -- the registry every planning test reads ---------------------------------------------------------


def base_config(hidden: int = 32, heads: int = 4, layers: int = 2) -> dict[str, Any]:
    """A Llama-style base config matching `peft_folder`'s q_proj tensors at the defaults."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "num_hidden_layers": layers,
        "intermediate_size": 4 * hidden,
    }


def hf_llm_folder(root: Path) -> Path:
    """A fine-tuned HF folder as the Trainer leaves it: weights in both formats, optimizer and
    scheduler state, trainer state and an intermediate checkpoint beside the servable files."""
    llama_folder(root)
    _pickle(root / "pytorch_model.bin", {"model.embed_tokens.weight": [0.0] * 4})
    _pickle(root / "optimizer.pt", {"state": {}, "param_groups": [{"lr": 1e-4}]})
    _pickle(root / "scheduler.pt", {"last_epoch": 3})
    (root / "trainer_state.json").write_text(json.dumps({"global_step": 100, "epoch": 3.0}))
    safetensors_file(root / "checkpoint-100" / "model.safetensors", {"model.embed_tokens.weight": (64, 8)})
    _pickle(root / "checkpoint-100" / "optimizer.pt", {"state": {1: 2}})
    backdate(root)
    return root


def seed_004_adapter(root: Path, base: str | None = SEED_004_BASE) -> Path:
    """Seed 004's adapter folder plus what a PEFT training run leaves beside it."""
    peft_folder(root, base=base)
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    _pickle(root / "adapter_model.bin", {"base_model.model.lora_A": [0.0]})
    _pickle(root / "optimizer.pt", {"state": {}})
    _pickle(root / "scheduler.pt", {"last_epoch": 2})
    _pickle(root / "rng_state_0.pth", {"python": 1})
    (root / "trainer_state.json").write_text(json.dumps({"global_step": 50}))
    safetensors_file(root / "checkpoint-50" / "adapter_model.safetensors", {"lora_A": (4, 4)})
    backdate(root)
    return root


ADAPTER_FILES = [
    "adapter_config.json",
    "adapter_model.safetensors",
    MANIFEST_FILENAME,
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
LLM_FILES = [
    "README.md",
    MANIFEST_FILENAME,
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer_config.json",
]


@dataclass
class World:
    registry: Registry
    home: Path
    root: Path
    fleet_file: Path
    fleet: Fleet
    sources: dict[str, Path]
    llm: VersionRecord  # tiny-llama-v1@1: an HF folder, also the registered base of REGISTERED_BASE
    grammar: VersionRecord  # seed 004's adapter on meta-llama/Llama-3.2-3B-Instruct
    paraphrase: VersionRecord  # an adapter on REGISTERED_BASE
    describer: VersionRecord  # an adapter on a base no node and no artifact has
    orphan: VersionRecord  # an adapter naming no base model at all
    raw: VersionRecord  # vision-vit-base16-embed-v1: raw, validated, production
    validated: VersionRecord
    production: VersionRecord

    def node_root(self, name: str) -> Path:
        return self.root / "nodes" / name


def fleet_document(root: Path) -> dict[str, Any]:
    """Seed 004's three nodes as local nodes: jw2 (cleaner), jw3 (describer), kcloud (paraphraser)."""
    base = str(root / "bases" / "llama32_3b")
    return {
        "nodes": [
            {
                "name": "jw2",
                "host": "local",
                "node_type": "inference",
                "models_root": str(root / "nodes" / "jw2"),
                "base_models": {SEED_004_BASE: base},
                "labels": {"agent": "cleaner", "site": "etri"},
            },
            {
                "name": "jw3",
                "host": "local",
                "node_type": "inference",
                "models_root": str(root / "nodes" / "jw3"),
                "base_models": {SEED_004_BASE: base},
                "labels": {"agent": "describer", "site": "etri"},
            },
            {
                "name": "kcloud",
                "host": "local",
                "node_type": "decision",
                "models_root": str(root / "nodes" / "kcloud"),
                "labels": {"agent": "paraphraser"},
            },
        ]
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("world")
    fleet_file = _write_yaml(root / "fleet.yaml", fleet_document(root))
    sources = {
        "llm": hf_llm_folder(root / "runs" / "llama32_3b_sft"),
        "grammar": seed_004_adapter(root / "runs" / "llama32_3b_grammar_lora"),
        "paraphrase": seed_004_adapter(root / "runs" / "llama32_3b_paraphrase_lora", base=REGISTERED_BASE),
        "describer": seed_004_adapter(root / "runs" / "llama32_3b_wikipedia_only_lora", base="acme/absent-model-v1"),
        "orphan": seed_004_adapter(root / "runs" / "orphan_lora", base=None),
    }
    policy = root / "policy.json"
    policy.write_text(json.dumps({"checks": ["files_present", "readable", "pickles"]}))
    with Registry.open(root / "home") as registry:

        def register(key: str, name: str, **options: Any) -> VersionRecord:
            return registry.register(sources[key], RegisterOptions(artifact_name=name, **options)).version

        llm = register("llm", "tiny-llama-v1", train_data_tags=["jfleg"], metrics={"hhem_score": 8.8}, license="mit")
        grammar = register("grammar", "grammar-lora-v1", train_data_tags=["jfleg", "bea"])
        paraphrase = register("paraphrase", "paraphrase-lora-v1", train_data_tags=["paws", "qqp"])
        describer = register("describer", "describer-lora-v1", train_data_tags=["wikipedia-only"])
        orphan = register("orphan", "orphan-lora-v1")
        raw = registry.register(
            RunBuilder(root / "vision")("v5_5_20251124"), RegisterOptions(artifact_name="vision-vit-base16-embed-v1")
        ).version
        validated = registry.promote(raw.ref, "validated", checkpoint="best", policy=policy)
        production = registry.promote(validated.ref, "production", version="1.0.0", approved_by="alice")
        yield World(
            registry=registry,
            home=root / "home",
            root=root,
            fleet_file=fleet_file,
            fleet=load_fleet(fleet_file, root / "home"),
            sources=sources,
            llm=llm,
            grammar=grammar,
            paraphrase=paraphrase,
            describer=describer,
            orphan=orphan,
            raw=raw,
            validated=validated,
            production=production,
        )


def plan(world: World, *assignments: str | Assignment, stage: str = "raw", all_files: bool = False) -> DistributionPlan:
    parsed = [parse_assignment(a) if isinstance(a, str) else a for a in assignments]
    return build_plan(world.registry, world.fleet, parsed, require_stage=stage, all_files=all_files)


def nothing_on_nodes(world: World) -> None:
    """Planning never touches a node."""
    assert not (world.root / "nodes").exists()


# == 1. the fleet file ================================================================================


def seed_004_fleet() -> dict[str, Any]:
    """Seed 004's fleet as real remote nodes, as an operator writes the file."""
    common = {
        "user": "deploy",
        "identity_file": "~/.ssh/fleet_ed25519",
        "known_hosts": "~/.ssh/fleet_known_hosts",
        "models_root": "/home/models",
        "base_models": {SEED_004_BASE: "/home/models/llama32_3b"},
        "activate": "systemctl reload vllm",
        "health": "curl -fsS localhost:8000/health",
    }
    return {
        "nodes": [
            {"name": "jw2", "host": "129.254.202.252", "node_type": "inference", "labels": {"agent": "cleaner"}}
            | common,
            {"name": "jw3", "host": "129.254.202.253", "node_type": "inference", "labels": {"agent": "describer"}}
            | common,
            {
                "name": "kcloud",
                "host": "129.254.202.129",
                "port": 2222,
                "node_type": "decision",
                "labels": {"agent": "paraphraser"},
            }
            | common,
        ]
    }


def test_a_seed_004_fleet_file_loads_with_home_expanded_in_its_key_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_home = tmp_path / "operator"
    monkeypatch.setenv("HOME", str(user_home))
    home = tmp_path / "registry-home"
    _write_yaml(home / "fleet.yaml", seed_004_fleet())

    fleet = load_fleet(None, home)  # the default: <home>/fleet.yaml

    assert [node.name for node in fleet.nodes] == ["jw2", "jw3", "kcloud"]
    assert fleet.source == str(home / "fleet.yaml")
    jw2, _, kcloud = fleet.nodes
    assert jw2.address() == "deploy@129.254.202.252" and jw2.port == 22 and not jw2.is_local
    assert kcloud.port == 2222 and kcloud.node_type == "decision" and kcloud.labels == {"agent": "paraphraser"}
    assert jw2.identity_file == str(user_home / ".ssh" / "fleet_ed25519")
    assert jw2.known_hosts == str(user_home / ".ssh" / "fleet_known_hosts")
    assert jw2.base_models == {SEED_004_BASE: "/home/models/llama32_3b"}
    assert jw2.health == "curl -fsS localhost:8000/health" and jw2.keep_versions == 2
    assert jw2.serving_path("llama32_3b_grammar_lora") == "/home/models/llama32_3b_grammar_lora"
    assert load_fleet(home / "fleet.yaml", tmp_path) == fleet  # --fleet FILE reads the same


def _node_edit(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        change(next(node for node in document["nodes"] if node["name"] == name))

    return edit


BAD_FLEETS = [
    ("typo-heath", _node_edit("jw2", lambda n: n.update(heath="curl localhost")), "nodes[jw2].heath", "unknown key"),
    ("no-models-root", _node_edit("jw3", lambda n: n.pop("models_root")), "nodes[jw3].models_root", "required"),
    (
        "relative-root",
        _node_edit("jw2", lambda n: n.update(models_root="models")),
        "nodes[jw2].models_root",
        "absolute",
    ),
    (
        "dotdot-root",
        _node_edit("jw2", lambda n: n.update(models_root="/home/models/../../etc")),
        "nodes[jw2].models_root",
        "normalised",
    ),
    ("bad-type", _node_edit("jw3", lambda n: n.update(node_type="gpu")), "nodes[jw3].node_type", "unknown node type"),
    ("duplicate", lambda d: d["nodes"][1].update(name="jw2"), "(top level)", "repeated: jw2"),
    ("no-known-hosts", _node_edit("kcloud", lambda n: n.pop("known_hosts")), "nodes[kcloud]", "known_hosts"),
    ("port-too-big", _node_edit("kcloud", lambda n: n.update(port=70000)), "nodes[kcloud].port", "65535"),
    ("port-zero", _node_edit("kcloud", lambda n: n.update(port=0)), "nodes[kcloud].port", "greater than or equal"),
    ("port-text", _node_edit("jw2", lambda n: n.update(port="ssh")), "nodes[jw2].port", "integer"),
    (
        "relative-base",
        _node_edit("jw2", lambda n: n.update(base_models={SEED_004_BASE: "models/llama32_3b"})),
        "nodes[jw2].base_models",
        "must be absolute",
    ),
    (
        "dotdot-base",
        _node_edit("jw2", lambda n: n.update(base_models={SEED_004_BASE: "/home/models/../../root"})),
        "nodes[jw2].base_models",
        "without '..'",
    ),
    ("bad-name", _node_edit("jw2", lambda n: n.update(name="jw 2")), "nodes[jw 2].name", "letters, digits"),
    ("nameless", lambda d: d["nodes"][2].pop("name"), "nodes[2].name", "required"),
    ("empty-nodes", lambda d: d.update(nodes=[]), "nodes", "at least 1"),
    ("unknown-top-key", lambda d: d.update(node=[]), "node", "unknown key"),
    ("keep-zero", _node_edit("jw3", lambda n: n.update(keep_versions=0)), "nodes[jw3].keep_versions", "greater"),
]


@pytest.mark.parametrize(
    ("change", "field", "cause"), [case[1:] for case in BAD_FLEETS], ids=[c[0] for c in BAD_FLEETS]
)
def test_a_bad_fleet_file_is_refused_naming_the_file_the_node_and_the_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], field: str, cause: str
) -> None:
    document = seed_004_fleet()
    change(document)
    path = _write_yaml(tmp_path / "fleet.yaml", document)

    error = _error(lambda: load_fleet(path, tmp_path), InvalidInputError)

    assert isinstance(error, InvalidInputError)
    assert error.field == field
    assert cause in error.message
    assert str(error).startswith(f"{path}: field '{field}': ")


def test_a_fleet_file_that_is_not_a_mapping_or_not_there_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- jw2\n- jw3\n")
    error = _error(lambda: load_fleet(listed, tmp_path), InvalidInputError)
    assert str(error) == f"{listed}: a fleet file holds a mapping with a 'nodes' list"

    home = tmp_path / "home"
    default = _error(lambda: load_fleet(None, home), InvalidInputError)
    assert str(home / "fleet.yaml") in str(default) and "pass --fleet FILE" in str(default)
    given_path = _error(lambda: load_fleet(tmp_path / "missing.yaml", home), InvalidInputError)
    assert str(tmp_path / "missing.yaml") in str(given_path) and "check the path" in str(given_path)


def test_cli_fleet_show_lists_the_nodes_and_gives_json(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "fleet.yaml", seed_004_fleet())

    table = cli("fleet", "show", "--fleet", str(path), env={"HOME": str(tmp_path / "operator")}, check=True)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NODE", "ADDRESS", "TYPE", "MODELS", "ROOT", "LABELS", "HEALTH"]
    assert lines[1].split() == [
        "jw2",
        "deploy@129.254.202.252:22",
        "inference",
        "/home/models",
        "agent=cleaner",
        "yes",
    ]
    assert lines[3].split()[:3] == ["kcloud", "deploy@129.254.202.129:2222", "decision"]

    shown = cli("fleet", "show", "--fleet", str(path), "--json", env={"HOME": str(tmp_path / "operator")}, check=True)
    document = json.loads(shown.stdout)
    assert [node["name"] for node in document["nodes"]] == ["jw2", "jw3", "kcloud"]
    assert document["nodes"][0]["identity_file"] == str(tmp_path / "operator" / ".ssh" / "fleet_ed25519")
    assert document["source"] == str(path)


def test_cli_fleet_show_refuses_a_bad_or_missing_fleet_file(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    document = seed_004_fleet()
    document["nodes"][0]["heath"] = "curl localhost"
    path = _write_yaml(tmp_path / "fleet.yaml", document)

    refused = cli("fleet", "show", "--fleet", str(path))
    _one_line_error(refused, 3, str(path), "field 'nodes[jw2].heath'", "unknown key (a typo?)")
    assert refused.stdout == ""

    missing = cli("fleet", "show")
    _one_line_error(missing, 3, "no fleet file", "pass --fleet FILE", "fleet.yaml")


# == 2. selecting nodes ===============================================================================


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("jw2", ["jw2"]),
        ("kcloud,jw2", ["jw2", "kcloud"]),  # fleet order, not the order given
        ("type:inference", ["jw2", "jw3"]),
        ("type:decision", ["kcloud"]),
        ("label:agent=paraphraser", ["kcloud"]),
        ("label:site=etri", ["jw2", "jw3"]),
        ("kcloud, type:inference", ["jw2", "jw3", "kcloud"]),
        ("jw2,jw2,label:agent=cleaner,type:inference", ["jw2", "jw3"]),  # a union: each node once
    ],
)
def test_select_gives_the_union_of_names_types_and_labels_in_fleet_order(
    world: World, targets: str, expected: list[str]
) -> None:
    assert [node.name for node in world.fleet.select(targets)] == expected


@pytest.mark.parametrize(
    ("targets", "kind", "needles"),
    [
        ("jw9", NotFoundError, ["no node 'jw9'", "jw2, jw3, kcloud"]),
        ("jw2,jw9", NotFoundError, ["no node 'jw9'", "jw2, jw3, kcloud"]),
        ("type:memory", NotFoundError, ["no node matches 'type:memory'", "jw2, jw3, kcloud"]),
        ("label:agent=nobody", NotFoundError, ["no node matches 'label:agent=nobody'"]),
        ("jw2,,jw3", InvalidInputError, ["empty target in 'jw2,,jw3'"]),
        ("jw2,", InvalidInputError, ["empty target"]),
        ("", InvalidInputError, ["empty target"]),
        ("label:agent", InvalidInputError, ["'label:agent' must read label:KEY=VALUE"]),
        ("label:=cleaner", InvalidInputError, ["must read label:KEY=VALUE"]),
        ("type:gpu", InvalidInputError, ["unknown node type 'gpu'"]),
    ],
)
def test_select_refuses_unknown_nodes_empty_parts_and_bad_syntax(
    world: World, targets: str, kind: type[Exception], needles: list[str]
) -> None:
    error = _error(lambda: world.fleet.select(targets), kind)
    assert type(error) is kind
    for needle in needles:
        assert needle in str(error)
    if kind is InvalidInputError:
        assert isinstance(error, InvalidInputError) and error.field == "targets"


NODE_NAMES = ["n0", "n1", "n2", "n3", "n4", "n5"]
LABEL_KEYS = ["agent", "site"]
LABEL_VALUES = ["a", "b"]


@st.composite
def fleets_and_targets(draw: st.DrawFn) -> tuple[Fleet, list[str]]:
    names = draw(st.lists(st.sampled_from(NODE_NAMES), min_size=1, max_size=6, unique=True))
    nodes: list[dict[str, Any]] = []
    for name in names:
        labels = draw(st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2))
        node_type = draw(st.one_of(st.none(), st.sampled_from(NODE_TYPES[:3])))
        nodes.append({"name": name, "host": "local", "models_root": f"/srv/{name}", "labels": labels})
        if node_type is not None:
            nodes[-1]["node_type"] = node_type
    fleet = parse_fleet({"nodes": nodes}, "generated")
    parts = (
        names
        + [f"type:{n['node_type']}" for n in nodes if "node_type" in n]
        + [f"label:{k}={v}" for n in nodes for k, v in n["labels"].items()]
    )
    return fleet, draw(st.lists(st.sampled_from(parts), min_size=1, max_size=5))


def _matches(node: Any, part: str) -> bool:
    if part.startswith("type:"):
        return bool(node.node_type == part[5:])
    if part.startswith("label:"):
        key, _, value = part[6:].partition("=")
        return bool(node.labels.get(key) == value)
    return bool(node.name == part)


@FAST
@given(fleets_and_targets())
def test_select_over_generated_fleets_returns_exactly_the_union_of_matches(case: tuple[Fleet, list[str]]) -> None:
    fleet, parts = case
    chosen = fleet.select(" , ".join(parts))
    expected = [node for node in fleet.nodes if any(_matches(node, part) for part in parts)]
    assert chosen == expected
    assert len({node.name for node in chosen}) == len(chosen)


# == 3. assignments ===================================================================================


@pytest.mark.parametrize(
    ("text", "reference", "targets"),
    [
        ("grammar-lora-v1@production=jw2,type:inference", "grammar-lora-v1@production", "jw2,type:inference"),
        ("grammar-lora-v1@3=jw2", "grammar-lora-v1@3", "jw2"),
        ("grammar-lora-v1@1.2.0=label:agent=cleaner", "grammar-lora-v1@1.2.0", "label:agent=cleaner"),
        ("grammar-lora-v1=kcloud", "grammar-lora-v1", "kcloud"),  # NAME alone: @latest
        ("  grammar-lora-v1@champion =  jw2 , jw3  ", "grammar-lora-v1@champion", "jw2 , jw3"),
    ],
)
def test_parse_assignment_accepts_name_ref_equals_targets(text: str, reference: str, targets: str) -> None:
    parsed = parse_assignment(text)
    assert (parsed.reference, parsed.targets, parsed.target_name, parsed.base) == (reference, targets, None, None)
    assert parsed.source == "command line"


@pytest.mark.parametrize("text", ["grammar-lora-v1@1", "=jw2", "grammar-lora-v1@1=", "grammar-lora-v1@1=   ", "", "="])
def test_parse_assignment_refuses_a_missing_equals_or_an_empty_side(text: str) -> None:
    error = _error(lambda: parse_assignment(text), InvalidInputError)
    assert isinstance(error, InvalidInputError) and error.field == "assignment"
    assert f"assignment {text!r} must read NAME@REF=TARGETS" in error.message


@pytest.mark.parametrize(
    ("text", "cause"), [("@1=jw2", "no artifact name before '@'"), ("grammar-lora-v1@=jw2", "nothing after '@'")]
)
def test_parse_assignment_refuses_a_bad_reference(text: str, cause: str) -> None:
    error = _error(lambda: parse_assignment(text), InvalidInputError)
    assert cause in str(error) and text.split("=")[0] in str(error)


names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,5}){0,2}-v[1-9]", fullmatch=True)
refs = st.one_of(
    st.integers(1, 10**6).map(str),
    st.sampled_from(["latest", "raw", "validated", "production", "champion"]),
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)).map(lambda v: f"{v[0]}.{v[1]}.{v[2]}"),
)
target_parts = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True),
    st.sampled_from(NODE_TYPES).map(lambda t: f"type:{t}"),
    st.tuples(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.from_regex(r"[a-z0-9=]{0,5}", fullmatch=True)).map(
        lambda kv: f"label:{kv[0]}={kv[1]}"
    ),
)


@FAST
@given(names, refs, st.lists(target_parts, min_size=1, max_size=4), st.sampled_from(["", " ", "  "]))
def test_parse_assignment_round_trips_well_formed_assignments(name: str, ref: str, parts: list[str], pad: str) -> None:
    targets = ",".join(parts)
    parsed = parse_assignment(f"{pad}{name}@{ref}{pad}={pad}{targets}{pad}")
    assert parsed.reference == f"{name}@{ref}"
    assert parsed.targets == targets
    reference = parse_reference(parsed.reference)
    assert (reference.name, reference.ref) == (name, ref)


@FAST
@given(st.text(alphabet=st.sampled_from("ab@=1,: \x00./"), max_size=20))
def test_parse_assignment_either_parses_or_says_invalid_input(text: str) -> None:
    try:
        parsed = parse_assignment(text)
    except InvalidInputError:
        return
    assert parsed.reference and parsed.targets
    assert f"{parsed.reference}={parsed.targets}" == "=".join(part.strip() for part in text.split("=", 1))


def test_load_assignments_reads_a_list_or_an_assignments_key_with_targets_as_list_or_string(tmp_path: Path) -> None:
    entries = [
        {"artifact": "grammar-lora-v1@production", "targets": ["jw2", "type:decision"]},
        {"artifact": "describer-lora-v1@3", "targets": "jw3", "target_name": "llama32_3b_wikipedia_only_lora"},
        {"artifact": "paraphrase-lora-v1", "targets": "kcloud", "base": "tiny-llama-v1@1"},
    ]
    listed = _write_yaml(tmp_path / "list.yaml", entries)
    keyed = _write_yaml(tmp_path / "keyed.yml", {"assignments": entries})
    as_json = tmp_path / "assignments.json"
    as_json.write_text(json.dumps({"assignments": entries}))

    for path in (listed, keyed, as_json):
        loaded = load_assignments(path)
        assert [(a.reference, a.targets, a.target_name, a.base) for a in loaded] == [
            ("grammar-lora-v1@production", "jw2,type:decision", None, None),
            ("describer-lora-v1@3", "jw3", "llama32_3b_wikipedia_only_lora", None),
            ("paraphrase-lora-v1", "kcloud", None, "tiny-llama-v1@1"),
        ]
        assert [a.source for a in loaded] == [f"{path}: assignments[{i}]" for i in range(3)]


GOOD_ENTRY = {"artifact": "grammar-lora-v1@1", "targets": "jw2"}
BAD_ASSIGNMENTS = [
    ("unknown-key", [GOOD_ENTRY, GOOD_ENTRY | {"target": "x"}], "assignments[1]", "unknown key 'target'"),
    ("artifact-number", [{"artifact": 5, "targets": "jw2"}], "assignments[0]", "needs artifact: NAME@REF"),
    ("no-targets", [{"artifact": "grammar-lora-v1@1"}], "assignments[0]", "targets: NODES"),
    ("empty-target-list", [{"artifact": "grammar-lora-v1@1", "targets": []}], "assignments[0]", "targets: NODES"),
    ("targets-mapping", [{"artifact": "grammar-lora-v1@1", "targets": {"a": 1}}], "assignments[0]", "targets"),
    ("target-name-int", [GOOD_ENTRY | {"target_name": 5}], "assignments[0].target_name", "must be a string"),
    ("base-list", [GOOD_ENTRY | {"base": ["x"]}], "assignments[0].base", "must be a string"),
    ("entry-string", [GOOD_ENTRY, "grammar-lora-v1@1=jw2"], "assignments[1]", "a mapping with artifact and targets"),
    ("empty", [], None, "non-empty list"),
    ("mapping", {"assignments": {"artifact": "x"}}, None, "non-empty list"),
]


@pytest.mark.parametrize(
    ("document", "field", "cause"), [c[1:] for c in BAD_ASSIGNMENTS], ids=[c[0] for c in BAD_ASSIGNMENTS]
)
def test_load_assignments_refuses_bad_entries_naming_the_file_and_the_entry(
    tmp_path: Path, document: object, field: str | None, cause: str
) -> None:
    path = _write_yaml(tmp_path / "assignments.yaml", document)
    error = _error(lambda: load_assignments(path), InvalidInputError)
    assert isinstance(error, InvalidInputError)
    assert error.path == str(path) and error.field == field and cause in error.message
    assert str(error).startswith(str(path))


# == 4. build_plan refusals ===========================================================================


def test_an_unknown_node_or_artifact_is_refused_before_anything_is_planned(world: World) -> None:
    unknown_node = _error(lambda: plan(world, "tiny-llama-v1@1=jw2,jw9"), NotFoundError)
    assert "no node 'jw9'" in str(unknown_node) and "jw2, jw3, kcloud" in str(unknown_node)
    unknown_artifact = _error(lambda: plan(world, "tiny-llama-v2@1=jw2"), NotFoundError)
    assert str(unknown_artifact).startswith("command line: ") and "tiny-llama-v2" in str(unknown_artifact)
    nothing = _error(lambda: build_plan(world.registry, world.fleet, []), InvalidInputError)
    assert isinstance(nothing, InvalidInputError) and nothing.field == "assignment"
    nothing_on_nodes(world)


def test_a_version_below_the_required_stage_is_refused_saying_promote_or_require_stage(world: World) -> None:
    raw = _error(lambda: plan(world, "tiny-llama-v1@1=jw2", stage="production"), InvalidInputError)
    assert isinstance(raw, InvalidInputError) and raw.field == "--require-stage"
    assert "tiny-llama-v1@1 is tiny-llama-v1@1, a raw version; the plan requires production" in raw.message
    assert "promote it, or pass --require-stage raw" in raw.message

    validated = _error(
        lambda: plan(world, f"{world.validated.artifact_name}@validated=jw2", stage="production"), InvalidInputError
    )
    assert f"is {world.validated.ref}, a validated version" in str(validated)
    assert "--require-stage validated" in str(validated)

    # a production version passes a lower requirement, and the default requirement
    assert plan(world, f"{world.production.artifact_name}@production=jw2", stage="validated").artifacts[0].ref == (
        world.production.ref
    )
    assert plan(world, f"{world.production.artifact_name}@1.0.0=jw2", stage="production").artifacts[0].stage == (
        "production"
    )
    unknown = _error(lambda: plan(world, "tiny-llama-v1@1=jw2", stage="staging"), InvalidInputError)
    assert isinstance(unknown, InvalidInputError) and unknown.field == "--require-stage"
    assert "unknown stage 'staging'; use one of raw, validated, production or any" in unknown.message
    nothing_on_nodes(world)


def test_a_demoted_or_deprecated_version_is_refused(registry: Registry, make_run: RunBuilder, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"checks": ["files_present", "readable", "pickles"]}))
    raw = registry.register(make_run("retired"), RegisterOptions(artifact_name="retired-vit-base16-embed-v1")).version
    validated = registry.promote(raw.ref, "validated", checkpoint="best", policy=policy)
    registry.set_status(validated.ref, "demoted", reason="regressed on the holdout set")
    registry.set_status(raw.ref, "deprecated", reason="superseded")
    fleet = parse_fleet(fleet_document(tmp_path), "inline")

    demoted = _error(
        lambda: build_plan(registry, fleet, [parse_assignment(f"{validated.ref}=jw2")], require_stage="validated"),
        InvalidInputError,
    )
    assert f"{validated.ref} is demoted; deploy another version or restore it" in str(demoted)
    deprecated = _error(
        lambda: build_plan(registry, fleet, [parse_assignment(f"{raw.ref}=jw2")], require_stage="raw"),
        InvalidInputError,
    )
    assert f"{raw.ref} is deprecated" in str(deprecated)
    assert isinstance(deprecated, InvalidInputError) and deprecated.field == "artifact"


def test_an_adapter_whose_base_no_node_has_is_refused_naming_node_base_and_fix(world: World) -> None:
    error = _error(lambda: plan(world, "grammar-lora-v1@1=jw2,kcloud"), InvalidInputError)
    assert isinstance(error, InvalidInputError) and error.field == "base_model"
    assert f"node kcloud has no base model {SEED_004_BASE} for grammar-lora-v1@1" in error.message
    assert "declare it under base_models of kcloud in the fleet file" in error.message
    assert "base: NAME@REF" in error.message

    elsewhere = _error(lambda: plan(world, "describer-lora-v1@1=jw3"), InvalidInputError)
    assert "node jw3 has no base model acme/absent-model-v1" in str(elsewhere)
    assert "register it as an artifact named absent-model-v1" in str(elsewhere)

    baseless = _error(lambda: plan(world, "orphan-lora-v1@1=jw2"), InvalidInputError)
    assert "the adapter orphan-lora-v1@1 names no base model" in str(baseless)
    assert "give `base: NAME@REF`" in str(baseless)
    nothing_on_nodes(world)


def test_following_the_hint_for_a_missing_base_makes_the_plan(registry: Registry, tmp_path: Path) -> None:
    registry.register(seed_004_adapter(tmp_path / "adapter"), RegisterOptions(artifact_name="grammar-lora-v1"))
    fleet = parse_fleet(fleet_document(tmp_path), "inline")
    assignment = [parse_assignment("grammar-lora-v1@1=kcloud")]
    error = _error(lambda: build_plan(registry, fleet, assignment, require_stage="raw"), InvalidInputError)
    assert "register it as an artifact named llama-3.2-3b-instruct-v1 (or give `base: NAME@REF`)" in str(error)

    registry.register(llama_folder(tmp_path / "base"), RegisterOptions(artifact_name="llama-3.2-3b-instruct-v1"))
    planned = build_plan(registry, fleet, assignment, require_stage="raw")

    assert [(a.ref, a.dependency, a.base_of) for a in planned.artifacts] == [
        ("llama-3.2-3b-instruct-v1@1", True, ["grammar-lora-v1@1"]),
        ("grammar-lora-v1@1", False, []),
    ]
    assert planned.artifacts[1].nodes[0].base_path == f"{tmp_path}/nodes/kcloud/llama-3.2-3b-instruct-v1"


def test_two_versions_for_one_serving_path_are_refused(world: World) -> None:
    name = world.raw.artifact_name
    same_name = _error(
        lambda: plan(world, f"{name}@{world.validated.number}=jw2", f"{name}@{world.production.number}=jw2,jw3"),
        InvalidInputError,
    )
    assert f"{world.node_root('jw2')}/{name} on node jw2 is assigned both" in str(same_name)
    assert "give one of them another target_name" in str(same_name)

    shared = [
        Assignment("tiny-llama-v1@1", "jw3", target_name="serving"),
        Assignment("grammar-lora-v1@1", "type:inference", target_name="serving"),
    ]
    clash = _error(lambda: plan(world, *shared), InvalidInputError)
    assert isinstance(clash, InvalidInputError) and clash.field == "target_name"
    assert "serving on node jw3 is assigned both" in clash.message
    # the same version twice is one entry, not a clash
    merged = plan(world, "tiny-llama-v1@1=jw2", "tiny-llama-v1@latest=jw3")
    assert [(a.ref, [t.node for t in a.nodes]) for a in merged.artifacts] == [("tiny-llama-v1@1", ["jw2", "jw3"])]


@pytest.mark.parametrize("target_name", ["../x", "a/b", ".hidden", "..", ".", "/abs", "a\x00b", "x" * 201, "-rf"])
def test_a_target_name_that_is_not_one_plain_directory_name_is_refused(world: World, target_name: str) -> None:
    error = _error(
        lambda: plan(world, Assignment("tiny-llama-v1@1", "jw2", target_name=target_name)), InvalidInputError
    )
    assert isinstance(error, InvalidInputError) and error.field == "target_name"
    assert f"target name {target_name!r} must be one directory name" in error.message
    assert _error(lambda: check_target_name(target_name), InvalidInputError)
    nothing_on_nodes(world)


def test_cli_plan_refusals_exit_with_the_error_code_and_write_nothing(
    world: World, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    out = tmp_path / "plan.json"
    common = ("--fleet", str(world.fleet_file), "--home", str(world.home), "--out", str(out))
    bad_yaml = _write_yaml(
        tmp_path / "bad.yaml", [{"artifact": "tiny-llama-v1@1", "targets": "jw2", "target_name": "../x"}]
    )
    cases: list[tuple[tuple[str, ...], int, tuple[str, ...]]] = [
        (("tiny-llama-v1@1=jw9", "--require-stage", "raw"), 4, ("no node 'jw9'", "jw2, jw3, kcloud")),
        (("tiny-llama-v1@1=jw2",), 3, ("field '--require-stage'", "a raw version", "--require-stage raw")),
        (("grammar-lora-v1@1=kcloud", "--require-stage", "raw"), 3, ("node kcloud has no base model",)),
        (("tiny-llama-v1@1", "--require-stage", "raw"), 3, ("field 'assignment'", "NAME@REF=TARGETS")),
        ((str(bad_yaml), "--require-stage", "raw"), 3, ("field 'target_name'", "'../x'")),
    ]
    for arguments, code, needles in cases:
        result = cli("deploy", "plan", *arguments, *common)
        _one_line_error(result, code, *needles)
        assert result.stdout == ""
        assert not out.exists() and not out.with_suffix(".md").exists()
    nothing_on_nodes(world)


# == 5. build_plan: what a plan holds =================================================================


def _files(item: Any) -> list[str]:
    return [f.path for f in item.files]


def test_an_hf_llm_folder_ships_its_servable_files_and_leaves_training_state_behind(world: World) -> None:
    item = plan(world, "tiny-llama-v1@1=jw2").artifacts[0]

    assert item.profile == "llm-huggingface" and item.model_type == "llm"
    assert _files(item) == LLM_FILES  # no .bin beside model.safetensors, no optimizer, no checkpoint-100/
    every = [f.path for f in world.llm.manifest.files]
    left = {"pytorch_model.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json"}
    left |= {"checkpoint-100/model.safetensors", "checkpoint-100/optimizer.pt"}
    assert left <= set(every)
    assert item.left_out == len(left) == len(every) - (len(LLM_FILES) - 1)
    source = world.sources["llm"]
    for planned in item.files:  # each digest is the real bytes' digest
        if planned.path != MANIFEST_FILENAME:
            data = (source / planned.path).read_bytes()
            assert (planned.size, planned.sha256) == (len(data), _sha256(data))
    assert item.bytes == sum(f.size for f in item.files)
    assert item.training_data == ["jfleg"] and item.metrics["hhem_score"] == 8.8 and item.license == "mit"
    assert item.nodes[0].serving_path == f"{world.node_root('jw2')}/tiny-llama-v1"
    assert item.nodes[0].base_path is None and item.base_ref is None and not item.dependency


def test_a_peft_adapter_ships_seed_004s_files_with_the_manifest_and_its_real_digest(world: World) -> None:
    item = plan(world, "grammar-lora-v1@1=jw2").artifacts[0]

    assert item.profile == "peft-adapter" and item.model_type == "adapter"
    assert _files(item) == ADAPTER_FILES
    assert item.left_out == len(world.grammar.manifest.files) - (len(ADAPTER_FILES) - 1) == 6
    manifest = next(f for f in item.files if f.path == MANIFEST_FILENAME)
    text = world.registry.show(item.ref).manifest.to_json().encode()
    assert (manifest.size, manifest.sha256) == (len(text), _sha256(text))
    assert json.loads(text)["artifact_name"] == "grammar-lora-v1"
    assert item.base_model == SEED_004_BASE
    assert item.training_data == ["jfleg", "bea"]


def test_all_files_ships_everything_under_another_version_dir(world: World) -> None:
    profiled = plan(world, "grammar-lora-v1@1=jw2").artifacts[0]
    again = plan(world, "grammar-lora-v1@latest=jw2").artifacts[0]
    everything = plan(world, "grammar-lora-v1@1=jw2", all_files=True).artifacts[0]

    assert again.version_dir == profiled.version_dir  # stable: the same files give the same directory
    assert profiled.version_dir.startswith("v1-") and len(profiled.version_dir) == len("v1-") + 12
    assert everything.profile == "all-files" and everything.left_out == 0
    assert _files(everything) == sorted([f.path for f in world.grammar.manifest.files] + [MANIFEST_FILENAME])
    assert everything.version_dir != profiled.version_dir
    assert everything.version_dir == version_dir_name(1, list(everything.files))
    described = describe_version(world.registry, "grammar-lora-v1@1", require_stage="raw")
    assert described.version_dir == profiled.version_dir and described.nodes == []


def test_an_adapters_base_comes_from_the_fleet_file(world: World) -> None:
    item = plan(world, "grammar-lora-v1@1=type:inference").artifacts[0]
    assert [(t.node, t.base_source, t.base_path) for t in item.nodes] == [
        ("jw2", "fleet", str(world.root / "bases" / "llama32_3b")),
        ("jw3", "fleet", str(world.root / "bases" / "llama32_3b")),
    ]
    assert item.base_ref is None and not item.dependency


def test_an_adapters_registered_base_is_planned_first_as_a_dependency(world: World) -> None:
    planned = plan(world, "paraphrase-lora-v1@1=kcloud,jw3")

    base, adapter = planned.artifacts
    assert (base.ref, base.dependency, base.target_name) == ("tiny-llama-v1@1", True, "tiny-llama-v1")
    assert [t.node for t in base.nodes] == ["jw3", "kcloud"] and base.profile == "llm-huggingface"
    assert (adapter.ref, adapter.dependency, adapter.base_ref) == ("paraphrase-lora-v1@1", False, "tiny-llama-v1@1")
    assert adapter.base_model == REGISTERED_BASE
    for target in adapter.nodes:
        assert target.base_source == "registry"
        assert target.base_path == planned.fleet.node(target.node).serving_path("tiny-llama-v1")


def test_an_explicit_base_in_the_assignments_file_wins(world: World, tmp_path: Path) -> None:
    path = _write_yaml(
        tmp_path / "assignments.yaml",
        {
            "assignments": [
                {"artifact": "describer-lora-v1@1", "targets": ["kcloud"], "base": "tiny-llama-v1@1"},
                {"artifact": "grammar-lora-v1@1", "targets": "jw2", "base": "tiny-llama-v1@1"},
            ]
        },
    )
    planned = build_plan(world.registry, world.fleet, load_assignments(path), require_stage="raw")

    assert [(a.ref, a.dependency) for a in planned.artifacts] == [
        ("tiny-llama-v1@1", True),
        ("describer-lora-v1@1", False),
        ("grammar-lora-v1@1", False),
    ]
    assert sorted(t.node for t in planned.artifacts[0].nodes) == ["jw2", "kcloud"]  # one base entry for both
    for adapter in planned.artifacts[1:]:
        assert adapter.base_ref == "tiny-llama-v1@1"
        assert [t.base_source for t in adapter.nodes] == ["registry"]  # even where the fleet names a base


def test_base_ref_is_only_set_when_the_base_is_shipped(world: World) -> None:
    fleet = parse_fleet(
        {"nodes": [world.fleet.nodes[0].model_dump() | {"base_models": {REGISTERED_BASE: "/srv/tiny-llama"}}]}, "x"
    )
    planned = build_plan(world.registry, fleet, [parse_assignment("paraphrase-lora-v1@1=jw2")], require_stage="raw")
    (adapter,) = planned.artifacts
    assert adapter.nodes[0].base_source == "fleet"
    assert adapter.base_ref is None
    assert "shipped first" not in plan_markdown(planned, TEMPLATE)


def test_a_base_also_assigned_explicitly_still_comes_before_its_adapter(world: World) -> None:
    planned = plan(world, "paraphrase-lora-v1@1=kcloud", "tiny-llama-v1@1=kcloud")
    assert [a.ref for a in planned.artifacts] == ["tiny-llama-v1@1", "paraphrase-lora-v1@1"]


def test_a_deprecated_base_is_not_shipped_as_a_dependency(registry: Registry, tmp_path: Path) -> None:
    base = registry.register(llama_folder(tmp_path / "base"), RegisterOptions(artifact_name="tiny-llama-v1")).version
    registry.register(
        peft_folder(tmp_path / "adapter", base=REGISTERED_BASE), RegisterOptions(artifact_name="paraphrase-lora-v1")
    )
    fleet = parse_fleet(fleet_document(tmp_path), "inline")
    assert build_plan(registry, fleet, [parse_assignment("paraphrase-lora-v1@1=kcloud")], require_stage="raw")
    registry.set_status(base.ref, "deprecated", reason="superseded")

    by_name = _error(
        lambda: build_plan(registry, fleet, [parse_assignment("paraphrase-lora-v1@1=kcloud")], require_stage="raw"),
        InvalidInputError,
    )
    assert isinstance(by_name, InvalidInputError) and by_name.field == "base"
    assert f"the base model {REGISTERED_BASE} is registered as tiny-llama-v1, but:" in by_name.message
    explicit = [Assignment("paraphrase-lora-v1@1", "kcloud", base="tiny-llama-v1@1")]
    named = _error(lambda: build_plan(registry, fleet, explicit, require_stage="raw"), InvalidInputError)
    assert "tiny-llama-v1@1 is deprecated; deploy another version or restore it" in str(named)


def test_a_plan_round_trips_through_json_and_renders_seed_004s_markdown(world: World, tmp_path: Path) -> None:
    planned = plan(world, "grammar-lora-v1@1=jw2,jw3", "paraphrase-lora-v1@1=kcloud", "tiny-llama-v1@1=jw2")
    path = tmp_path / "plan.json"
    path.write_text(planned.to_json())

    assert read_plan(path) == planned
    assert planned.fleet == world.fleet and planned.fleet_file == str(world.fleet_file)
    assert planned.require_stage == "raw" and planned.all_files is False

    markdown = plan_markdown(planned, TEMPLATE)
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Models Ready for Distribution",
        "## Files to Transfer (per model)",
        "## Transfer Method",
        "## Verification",
        "## Status",
    ]
    assert "### grammar-lora-v1 → jw2 (local), jw3 (local)" in markdown
    assert f"  - Base: {SEED_004_BASE}\n" in markdown and "  - Training: jfleg, bea" in markdown
    assert f"  - Target: `jw2:{world.node_root('jw2')}/grammar-lora-v1/`" in markdown
    assert f"    - Base on jw3: `{world.root / 'bases' / 'llama32_3b'}` (from the fleet)" in markdown
    assert "(peft-adapter profile; 6 training files left behind)" in markdown
    for item in planned.artifacts:
        for f in item.files:
            assert f"| {f.path} | {f.size} | `{f.sha256}` |" in markdown
    assert TEMPLATE in markdown
    status = markdown.split("## Status", 1)[1].strip().splitlines()
    assert status == [f"- [ ] {a.ref} → {', '.join(t.node for t in a.nodes)}" for a in planned.artifacts] + [
        "- [ ] All checksums verified",
        "- [ ] All nodes tested",
    ]
    assert "[x]" not in markdown  # nothing is done at planning time


def test_cli_plan_writes_the_plan_and_its_markdown(world: World, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    out = tmp_path / "fleet-plan.json"
    assignments = _write_yaml(
        tmp_path / "assignments.yaml", [{"artifact": "grammar-lora-v1@1", "targets": ["label:agent=cleaner"]}]
    )
    result = cli(
        "deploy",
        "plan",
        str(assignments),
        "paraphrase-lora-v1@1=label:agent=paraphraser",
        "--require-stage",
        "raw",
        "--fleet",
        str(world.fleet_file),
        "--home",
        str(world.home),
        "--out",
        str(out),
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tiny-llama-v1@1 -> kcloud as tiny-llama-v1: 7 files, ")
    assert lines[0].endswith(", llm-huggingface profile (base of paraphrase-lora-v1@1)")
    assert lines[1].startswith("grammar-lora-v1@1 -> jw2 as grammar-lora-v1: 6 files, ")
    assert lines[1].endswith(" KiB, peft-adapter profile")
    assert lines[2].startswith("paraphrase-lora-v1@1 -> kcloud as paraphrase-lora-v1: 6 files, ")
    assert lines[3:] == [f"wrote {out} and {out.with_suffix('.md')}"]
    written = read_plan(out)
    assert [a.ref for a in written.artifacts] == ["tiny-llama-v1@1", "grammar-lora-v1@1", "paraphrase-lora-v1@1"]
    assert written.artifacts[1].requested == "grammar-lora-v1@1"
    assert out.with_suffix(".md").read_text().startswith("# Model Distribution Manifest\n")
    nothing_on_nodes(world)


# == 6. reading a plan back ===========================================================================


@pytest.fixture(scope="module")
def plan_document(world: World) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(plan(world, "grammar-lora-v1@1=jw2,jw3").to_json())
    return document


def _edited(tmp_path: Path, document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    copy = json.loads(json.dumps(document))
    change(copy)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(copy))
    return path


def _set_sha(document: dict[str, Any]) -> None:
    document["artifacts"][0]["files"][1]["sha256"] = "0" * 64


def _serving_outside(document: dict[str, Any]) -> None:
    document["artifacts"][0]["nodes"][0]["serving_path"] = "/etc/grammar-lora-v1"


def _target_dotdot(document: dict[str, Any]) -> None:
    document["artifacts"][0]["target_name"] = "../grammar-lora-v1"


def _relative_root(document: dict[str, Any]) -> None:
    document["fleet"]["nodes"][0]["models_root"] = "nodes/jw2"


def _unknown_field(document: dict[str, Any]) -> None:
    document["artifacts"][0]["checksum"] = "none"


READ_PLAN_REFUSALS = [
    ("file-list-edited", _set_sha, "grammar-lora-v1@1", "the file list was edited after planning"),
    ("serving-path-outside", _serving_outside, "artifacts[grammar-lora-v1@1].nodes[jw2]", "serving path /etc/"),
    ("target-name-dotdot", _target_dotdot, "target_name", "'../grammar-lora-v1' must be one directory name"),
    ("relative-models-root", _relative_root, "fleet.nodes.0.models_root", "absolute"),
    ("unknown-field", _unknown_field, "artifacts.0.checksum", "Extra inputs are not permitted"),
    ("wrong-format", lambda d: d.update(format="modelyard-distribution-plan/0"), None, "not a modelyard distribution"),
]


@pytest.mark.parametrize(
    ("change", "field", "cause"), [c[1:] for c in READ_PLAN_REFUSALS], ids=[c[0] for c in READ_PLAN_REFUSALS]
)
def test_read_plan_refuses_a_hand_edited_plan(
    tmp_path: Path, plan_document: dict[str, Any], change: Callable[[dict[str, Any]], None], field: str, cause: str
) -> None:
    path = _edited(tmp_path, plan_document, change)
    error = _error(lambda: read_plan(path), InvalidInputError)
    assert isinstance(error, InvalidInputError)
    assert error.field == field and cause in error.message


def test_read_plan_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    garbage = tmp_path / "plan.json"
    garbage.write_text("{not json")
    assert str(_error(lambda: read_plan(garbage), InvalidInputError)).startswith(f"{garbage}: not JSON (")
    for document in ([], {"artifacts": []}, {"format": None}):  # type: ignore[var-annotated]
        garbage.write_text(json.dumps(document))
        error = _error(lambda: read_plan(garbage), InvalidInputError)
        assert str(error) == f"{garbage}: not a modelyard distribution plan (format modelyard-distribution-plan/1)"


def test_cli_push_refuses_an_edited_plan_and_touches_no_node(
    world: World, plan_document: dict[str, Any], cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    path = _edited(tmp_path, plan_document, _set_sha)
    result = cli("deploy", "push", str(path), "--home", str(world.home))
    _one_line_error(result, 3, str(path), "field 'grammar-lora-v1@1'", "the file list was edited after planning")
    nothing_on_nodes(world)
    assert world.registry.deployments() == []


# == 7 and 8. the node agent in-process, and the shell agent on a local node (the `node` fixture) ======

TARGET = "grammar-lora-v1"


def _request(root: Path, command: str, **fields: Any) -> dict[str, Any]:
    return {"command": command, "root": str(root), "target": TARGET, **fields}


def _listing(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(data), "sha256": _sha256(data)} for p, data in sorted(files.items())]


def _write_tree(directory: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(data)


def _safetensors_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    path = tmp_path / f"weights-{seed}.safetensors"
    write_safetensors(path, seed)
    return path.read_bytes()


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path / "node" / "models"


@pytest.fixture
def version_files(tmp_path: Path) -> dict[str, bytes]:
    return {
        "adapter_config.json": b'{"r": 16}\n',
        "model.safetensors": _safetensors_bytes(tmp_path),
        "tokenizer/tokenizer.json": b'{"version": "1.0"}\n',
    }


class PythonNode:
    """The agent's commands as `deploy push` runs them, in this process."""

    kind = "python"
    refused: type[Exception] = AgentError
    record_suffix = ".json"

    def __init__(self, root: Path) -> None:
        self.root = root

    def call(self, command: str, **fields: Any) -> Any:
        payload = fields.pop("payload", None)
        return agent.handle(_request(self.root, command, **fields), payload)


class ShellNode:
    """The POSIX shell fallback against a `host: local` node."""

    kind = "shell"
    refused: type[Exception] = AgentRefused
    record_suffix = ".sums"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agent = ShellAgent(NodeConnection(Node(name="n", host="local", models_root=str(root))))

    def call(self, command: str, **fields: Any) -> Any:
        if command == "probe":
            return self.agent.call("probe", root=str(self.root), **fields)
        return self.agent.call(command, root=str(self.root), target=TARGET, **fields)


NodeAgent = PythonNode | ShellNode


@pytest.fixture(params=["python", "shell"])
def node(request: pytest.FixtureRequest, node_root: Path) -> NodeAgent:
    return PythonNode(node_root) if request.param == "python" else ShellNode(node_root)


def _paths(root: Path, version: str) -> tuple[Path, Path, Path]:
    base = root / ".modelyard" / TARGET
    return base / ".staging" / version, base / version, base / "records"


def _install(node: NodeAgent, version: str, files: dict[str, bytes]) -> dict[str, Any]:
    """prepare, copy into staging (what rsync does), verify: the version is installed."""
    prepared = node.call("prepare", version=version, bytes=sum(len(d) for d in files.values()))
    assert prepared["installed"] is False and prepared["staging"] == str(_paths(node.root, version)[0])
    _write_tree(Path(prepared["staging"]), files)
    result = node.call("verify", version=version, files=_listing(files), where="staging", ref=f"{TARGET}@1")
    assert result["passed"], result["checks"]
    return dict(result)


@pytest.mark.parametrize("value", ["", ".", "..", ".hidden", "a/b", "/abs", "a\x00b", None, 5, ["v1"]])
def test_segment_refuses_anything_but_a_plain_directory_name(value: object) -> None:
    with pytest.raises(AgentError, match="is not a plain directory name"):
        agent.segment(value, "version")
    assert agent.segment("v1-0123456789ab", "version") == "v1-0123456789ab"


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "./a", "", "a\x00b", "..", None, 3]
)
def test_relative_file_refuses_paths_that_could_leave_the_version(value: object) -> None:
    with pytest.raises(AgentError, match="file path"):
        agent.relative_file(value)


@FAST
@given(st.lists(st.sampled_from(["a", "b", ".", "/", "..", "\x00", " ", "é", "~"]), max_size=12).map("".join))
def test_relative_file_never_accepts_a_path_that_escapes(value: str) -> None:
    base = "/node/models/.modelyard/t/v1"
    try:
        accepted = agent.relative_file(value)
    except AgentError:
        return
    joined = posixpath.normpath(posixpath.join(base, accepted))
    assert joined.startswith(base + "/") and joined != base
    assert posixpath.join(base, accepted) == joined  # already normalised: nothing to resolve


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        ({"root": "models"}, "must be an absolute, normalised path"),
        ({"root": "/srv/models/../../etc"}, "must be an absolute, normalised path"),
        ({"target": "../escape"}, "target name '../escape' is not a plain directory name"),
        ({"target": ".modelyard"}, "is not a plain directory name"),
        ({"version": "../../v1"}, "version '../../v1' is not a plain directory name"),
        ({"files": [{"path": "../../../etc/passwd", "size": 1, "sha256": "0"}]}, "must not contain"),
        ({"command": "shell"}, "unknown agent command 'shell'"),
    ],
)
def test_the_agent_refuses_requests_that_would_leave_the_models_root(
    node_root: Path, fields: dict[str, Any], cause: str
) -> None:
    request = _request(node_root, "verify", version="v1-abc", files=[], where="staging") | fields
    with pytest.raises(AgentError) as caught:
        agent.handle(request, None)
    assert cause in str(caught.value)
    assert not node_root.exists()


def test_prepare_refuses_a_version_the_disk_cannot_hold(node: NodeAgent) -> None:
    with pytest.raises(node.refused, match="not enough disk"):
        node.call("prepare", version="v1-abc", bytes=1 << 62)


def test_the_shell_agent_refuses_a_target_that_is_not_a_plain_name(node_root: Path) -> None:
    (node_root / "someone-elses-model").mkdir(parents=True)
    (node_root / ".modelyard").mkdir()
    with pytest.raises(AgentRefused, match="not a plain directory name"):
        ShellNode(node_root).agent.call("state", root=str(node_root), target="..")


def test_probe_reports_the_node(node: NodeAgent) -> None:
    probe = node.call("probe")
    assert probe["root_exists"] is False and probe["root_writable"] is True
    assert probe["hostname"] == platform.node() and probe["free_bytes"] > 0 and probe["total_bytes"] > 0
    assert probe["tools"]["rsync"] and probe["tools"]["openssl"]
    node.root.mkdir(parents=True)
    assert node.call("probe")["root_exists"] is True
    assert probe["python"] == (platform.python_version() if node.kind == "python" else None)


def test_a_passing_verify_installs_the_staged_version_and_records_it(
    node: NodeAgent, version_files: dict[str, bytes]
) -> None:
    result = _install(node, "v1-abc", version_files)

    staging, installed, records = _paths(node.root, "v1-abc")
    assert [result["checks"][name]["status"] for name in ("files_present", "sizes", "sha256")] == ["passed"] * 3
    expected_load = "passed" if node.kind == "python" else "skipped"  # the shell cannot read headers
    assert result["checks"]["load"]["status"] == expected_load
    assert not staging.exists()
    assert {str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()} == set(version_files)
    assert result["files"] == {p: {"size": len(d), "sha256": _sha256(d)} for p, d in version_files.items()}
    assert (records / f"v1-abc{node.record_suffix}").is_file()
    assert node.call("prepare", version="v1-abc", bytes=0)["installed"] is True
    state = node.call("state")
    assert (state["current"], state["serving"], state["staging"]) == (None, "missing", [])
    assert [(v["version"], v["recorded"], v["intact"]) for v in state["versions"]] == [("v1-abc", True, True)]


def test_a_python_record_holds_what_verification_saw(node_root: Path, version_files: dict[str, bytes]) -> None:
    python = PythonNode(node_root)
    _install(python, "v1-abc", version_files)
    _, installed, records = _paths(node_root, "v1-abc")
    record = json.loads((records / "v1-abc.json").read_text())
    assert record["ref"] == f"{TARGET}@1" and record["verified_at"] > 0
    for relative, data in version_files.items():
        st_ = (installed / relative).stat()
        assert record["files"][relative] == {"size": len(data), "mtime_ns": st_.st_mtime_ns, "sha256": _sha256(data)}


VERIFY_FAILURES = ["missing", "wrong-size", "wrong-digest", "extra"]


@pytest.mark.parametrize("failure", VERIFY_FAILURES)
def test_a_failing_verify_names_the_check_discards_bad_files_and_installs_nothing(
    node: NodeAgent, version_files: dict[str, bytes], failure: str
) -> None:
    planned = dict(version_files)
    staged = dict(version_files)
    if failure == "missing":
        del staged["tokenizer/tokenizer.json"]
    elif failure == "wrong-size":
        staged["adapter_config.json"] = b'{"r": 16, "lora_alpha": 32}\n'
    elif failure == "wrong-digest":
        staged["adapter_config.json"] = b'{"r": 32}\n'  # the same size, other bytes
    else:
        staged["notes.txt"] = b"not in the manifest\n"
    node.call("prepare", version="v1-abc", bytes=1)
    staging, installed, records = _paths(node.root, "v1-abc")
    _write_tree(staging, staged)

    result = node.call("verify", version="v1-abc", files=_listing(planned), where="staging")

    statuses = {name: check["status"] for name, check in result["checks"].items() if name != "load"}
    expected = {
        "missing": {"files_present": "failed", "sizes": "failed", "sha256": "failed"},
        "wrong-size": {"files_present": "passed", "sizes": "failed", "sha256": "failed"},
        "wrong-digest": {"files_present": "passed", "sizes": "passed", "sha256": "failed"},
        "extra": {"files_present": "failed", "sizes": "passed", "sha256": "passed"},
    }[failure]
    assert statuses == expected and result["passed"] is False
    named = {"missing": "tokenizer/tokenizer.json", "extra": "notes.txt"}.get(failure, "adapter_config.json")
    failed_reasons = " ".join(c["reason"] for c in result["checks"].values() if c["status"] == "failed")
    assert named in failed_reasons
    assert not installed.exists() and not records.exists()
    left = {str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()}
    if failure in ("wrong-size", "wrong-digest"):  # rsync would trust their size and mtime on a retry
        assert left == set(staged) - {"adapter_config.json"}
    else:
        assert left == set(staged)


def test_state_notices_a_touched_or_grown_file(node: NodeAgent, version_files: dict[str, bytes]) -> None:
    _install(node, "v1-abc", version_files)
    _, installed, _ = _paths(node.root, "v1-abc")
    weights = installed / "model.safetensors"
    original = weights.stat()

    def intact() -> bool:
        (version,) = node.call("state")["versions"]
        return bool(version["intact"])

    assert intact()
    os.utime(weights, ns=(original.st_atime_ns, original.st_mtime_ns + 5_000_000_000))
    assert not intact()
    os.utime(weights, ns=(original.st_atime_ns, original.st_mtime_ns))
    assert intact()
    with weights.open("ab") as handle:
        handle.write(b"\0")
    os.utime(weights, ns=(original.st_atime_ns, original.st_mtime_ns))  # same mtime, one more byte
    assert not intact()


def test_a_new_file_in_an_installed_version_makes_it_not_intact(
    node: NodeAgent, version_files: dict[str, bytes]
) -> None:
    _install(node, "v1-abc", version_files)
    (_paths(node.root, "v1-abc")[1] / "injected.py").write_text("import os\n")
    assert [v["intact"] for v in node.call("state")["versions"]] == [False]


def test_switch_points_the_serving_path_at_a_verified_version(node: NodeAgent, version_files: dict[str, bytes]) -> None:
    _install(node, "v1-abc", version_files)
    _install(node, "v2-def", version_files | {"adapter_config.json": b'{"r": 32, "lora_alpha": 64}\n'})
    serving = node.root / TARGET

    assert node.call("switch", version="v1-abc") == {"previous": None, "current": "v1-abc"}
    assert os.readlink(serving) == f".modelyard/{TARGET}/v1-abc"
    assert (serving / "adapter_config.json").read_bytes() == b'{"r": 16}\n'
    assert node.call("switch", version="v2-def") == {"previous": "v1-abc", "current": "v2-def"}
    assert json.loads((serving / "adapter_config.json").read_text())["r"] == 32
    state = node.call("state")
    assert (state["current"], state["serving"]) == ("v2-def", "symlink")
    assert [name for name in os.listdir(node.root) if name != ".modelyard"] == [TARGET]  # no temporary left


def test_switch_refuses_a_foreign_directory_or_an_unverified_version(
    node: NodeAgent, version_files: dict[str, bytes]
) -> None:
    _install(node, "v1-abc", version_files)
    serving = node.root / TARGET
    serving.mkdir()
    (serving / "model.bin").write_bytes(b"someone else's model")

    with pytest.raises(node.refused, match="foreign|not made by modelyard"):
        node.call("switch", version="v1-abc")
    assert serving.is_dir() and not serving.is_symlink()
    assert (serving / "model.bin").read_bytes() == b"someone else's model"
    assert node.call("state")["serving"] == "foreign"

    serving.joinpath("model.bin").unlink()
    serving.rmdir()
    with pytest.raises(node.refused, match="not (installed and )?verified"):
        node.call("switch", version="v9-unknown")
    assert not os.path.lexists(serving)


def test_a_symlink_modelyard_did_not_make_is_foreign(node_root: Path, version_files: dict[str, bytes]) -> None:
    python = PythonNode(node_root)
    _install(python, "v1-abc", version_files)
    (node_root / TARGET).symlink_to("/srv/elsewhere")
    assert python.call("state")["serving"] == "foreign"
    with pytest.raises(AgentError, match="not made by modelyard"):
        python.call("switch", version="v1-abc")
    assert python.call("switch", version=None) == {"previous": None, "current": None}
    assert os.readlink(node_root / TARGET) == "/srv/elsewhere"  # never removed


def test_the_shell_agent_leaves_a_symlink_it_did_not_make_alone(
    node_root: Path, version_files: dict[str, bytes]
) -> None:
    shell = ShellNode(node_root)
    _install(shell, "v1-abc", version_files)
    (node_root / TARGET).symlink_to("/srv/elsewhere")
    assert shell.call("state")["serving"] == "foreign"
    with pytest.raises(AgentRefused):
        shell.call("switch", version="v1-abc")
    assert os.readlink(node_root / TARGET) == "/srv/elsewhere"


def test_switch_to_none_removes_only_the_serving_symlink(node: NodeAgent, version_files: dict[str, bytes]) -> None:
    _install(node, "v1-abc", version_files)
    node.call("switch", version="v1-abc")

    assert node.call("switch", version=None) == {"previous": "v1-abc", "current": None}
    assert not os.path.lexists(node.root / TARGET)
    assert _paths(node.root, "v1-abc")[1].is_dir()  # the version stays for a later switch
    assert node.call("switch", version=None) == {"previous": None, "current": None}
    assert node.call("switch", version="v1-abc") == {"previous": None, "current": "v1-abc"}


def test_a_reader_never_sees_the_serving_path_missing_during_switches(
    node_root: Path, version_files: dict[str, bytes]
) -> None:
    python = PythonNode(node_root)
    _install(python, "v1-abc", version_files)
    _install(python, "v2-def", version_files | {"adapter_config.json": b'{"r": 32, "lora_alpha": 64}\n'})
    python.call("switch", version="v1-abc")
    config = node_root / TARGET / "adapter_config.json"
    seen: list[bytes] = []
    missing: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(config.read_bytes())
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for number in range(60):
            python.call("switch", version="v2-def" if number % 2 == 0 else "v1-abc")
            reads = len(seen) + len(missing)
            while len(seen) + len(missing) == reads and reader.is_alive():  # let it read this version
                threading.Event().wait(0.0005)
    finally:
        done.set()
        reader.join()
    assert missing == []
    assert set(seen) == {b'{"r": 16}\n', b'{"r": 32, "lora_alpha": 64}\n'} and len(seen) >= 60


def test_cleanup_keeps_the_given_versions_and_the_served_one(node: NodeAgent, version_files: dict[str, bytes]) -> None:
    for number in range(1, 5):
        _install(node, f"v{number}-abc", version_files | {"adapter_config.json": f'{{"r": {number}}}'.encode()})
    node.call("switch", version="v2-abc")
    node.call("prepare", version="v5-abc", bytes=1)
    node.call("prepare", version="v6-abc", bytes=1)

    removed = node.call("cleanup", keep=["v4-abc"], keep_staging=["v6-abc"])

    assert sorted(removed["removed"]) == [".staging/v5-abc", "v1-abc", "v3-abc"]
    state = node.call("state")
    assert [v["version"] for v in state["versions"]] == ["v2-abc", "v4-abc"]
    assert state["staging"] == ["v6-abc"] and state["current"] == "v2-abc"
    records = sorted(p.name for p in _paths(node.root, "x")[2].iterdir())
    assert records == [f"v2-abc{node.record_suffix}", f"v4-abc{node.record_suffix}"]


BLOCK = 1024


def test_ranges_and_patch_repair_a_damaged_file_in_batches(node_root: Path, tmp_path: Path) -> None:
    python = PythonNode(node_root)
    good = os.urandom(10 * BLOCK + 100)
    _install(python, "v1-abc", {"model.safetensors.part": good})
    damaged_path = _paths(node_root, "v1-abc")[1] / "model.safetensors.part"
    damaged = bytearray(good)
    damaged[2 * BLOCK + 5] ^= 0xFF
    damaged[10 * BLOCK + 50] ^= 0xFF  # the short last block
    damaged_path.write_bytes(bytes(damaged))
    other_version = tmp_path / "hardlinked-elsewhere"
    os.link(damaged_path, other_version)  # a version sharing the inode keeps its bytes

    theirs = python.call("ranges", version="v1-abc", path="model.safetensors.part", block_size=BLOCK)
    ours = [_sha256(good[i : i + BLOCK]) for i in range(0, len(good), BLOCK)]
    assert theirs["size"] == len(good) and len(theirs["blocks"]) == len(ours) == 11
    bad = [i for i, digest in enumerate(ours) if theirs["blocks"][i] != digest]
    assert bad == [2, 10]

    common = {"version": "v1-abc", "path": "model.safetensors.part", "block_size": BLOCK, "size": len(good)}
    batch = {"sha256": _sha256(good), "first": True, "final": False}
    first = python.call("patch", **common, **batch, blocks=[2], payload=io.BytesIO(good[2 * BLOCK : 3 * BLOCK]))
    assert first == {"path": "model.safetensors.part", "sha256": None, "blocks": 1}
    assert damaged_path.read_bytes() == bytes(damaged)  # nothing replaced before the final batch
    batch = {"sha256": _sha256(good), "first": False, "final": True}
    final = python.call("patch", **common, **batch, blocks=[10], payload=io.BytesIO(good[10 * BLOCK :]))
    assert final == {"path": "model.safetensors.part", "sha256": _sha256(good), "blocks": 1}
    assert damaged_path.read_bytes() == good
    assert other_version.read_bytes() == bytes(damaged)
    assert sorted(os.listdir(damaged_path.parent)) == ["model.safetensors.part"]  # no repair copy left
    verified = python.call("verify", version="v1-abc", files=_listing({"model.safetensors.part": good}))
    assert verified["passed"] and verified["changed_since_record"] == {"edited": [], "deleted": [], "added": []}


def test_a_repair_whose_result_has_the_wrong_digest_leaves_the_file_untouched(node_root: Path) -> None:
    python = PythonNode(node_root)
    good = os.urandom(4 * BLOCK)
    _install(python, "v1-abc", {"weights.bin": good})
    path = _paths(node_root, "v1-abc")[1] / "weights.bin"
    damaged = b"\0" * BLOCK + good[BLOCK:]
    path.write_bytes(damaged)
    common = {"version": "v1-abc", "path": "weights.bin", "block_size": BLOCK, "size": len(good), "blocks": [0]}

    with pytest.raises(AgentError, match="weights.bin: SHA-256 after repair is"):
        python.call("patch", **common, sha256=_sha256(good), payload=io.BytesIO(b"\1" * BLOCK))
    assert path.read_bytes() == damaged and os.listdir(path.parent) == ["weights.bin"]

    with pytest.raises(AgentError, match="the repair stream ended early: 10 of 1024 bytes"):
        python.call("patch", **common, sha256=_sha256(good), payload=io.BytesIO(b"\1" * 10))
    assert path.read_bytes() == damaged

    with pytest.raises(AgentError, match="must not contain"):
        python.call("patch", **common | {"path": "../../escape"}, sha256=_sha256(good), payload=io.BytesIO(b""))
    assert not (node_root / ".modelyard" / "escape").exists()


# -- load checks --


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    return peft_folder(tmp_path / "adapter", r=16)


def _base(tmp_path: Path, **config: int) -> str:
    directory = tmp_path / "base-model"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(base_config(**config)))
    return str(directory)


def test_the_peft_load_check_passes_against_a_matching_base_config(adapter_dir: Path, tmp_path: Path) -> None:
    check = agent.load_check(str(adapter_dir), {"kind": "peft", "base_path": _base(tmp_path)})
    assert check["status"] == "passed"
    assert check["reason"].startswith("2 tensors match the base config (r=16)")


def _rewrite_config(adapter_dir: Path, **changes: Any) -> None:
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config | changes))


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
Q_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("wider-base", [f"{Q_A}: input size 32 but the base model's q_proj has 64", f"{Q_B}: output size 32"]),
        ("rank", [f"{Q_A}: rank 16 but adapter_config r=8", f"{Q_B}: rank 16 but adapter_config r=8"]),
        ("deep-layer", ["layers.5.self_attn.v_proj.lora_A.weight: layer 5 but the base model has 2 layers"]),
    ],
)
def test_the_peft_load_check_fails_naming_the_tensor(
    adapter_dir: Path, tmp_path: Path, case: str, needles: list[str]
) -> None:
    base = _base(tmp_path, hidden=64 if case == "wider-base" else 32)
    if case == "rank":
        _rewrite_config(adapter_dir, r=8)
    if case == "deep-layer":
        safetensors_file(
            adapter_dir / "adapter_model.safetensors",
            {
                "base_model.model.model.layers.5.self_attn.v_proj.lora_A.weight": (16, 32),
                "base_model.model.model.layers.5.self_attn.v_proj.lora_B.weight": (32, 16),
            },
        )
    check = agent.load_check(str(adapter_dir), {"kind": "peft", "base_path": base})
    assert check["status"] == "failed"
    for needle in needles:
        assert needle in check["reason"]


def test_the_peft_load_check_is_skipped_when_the_base_config_cannot_be_read(adapter_dir: Path, tmp_path: Path) -> None:
    absent = agent.load_check(str(adapter_dir), {"kind": "peft", "base_path": str(tmp_path / "no-base")})
    assert absent == {
        "status": "skipped",
        "reason": f"the base model's config is not readable on the node ({tmp_path / 'no-base'}/config.json)",
    }
    unnamed = agent.load_check(str(adapter_dir), {"kind": "peft", "base_path": None})
    assert unnamed["status"] == "skipped" and "no base path" in unnamed["reason"]
    (adapter_dir / "adapter_config.json").unlink()
    broken = agent.load_check(str(adapter_dir), {"kind": "peft", "base_path": _base(tmp_path)})
    assert broken == {"status": "failed", "reason": "adapter_config.json is missing or not JSON"}


def test_verify_runs_the_peft_check_and_a_skipped_load_does_not_fail_it(
    node_root: Path, adapter_dir: Path, tmp_path: Path
) -> None:
    files = {p.name: p.read_bytes() for p in adapter_dir.iterdir()}
    python = PythonNode(node_root)
    python.call("prepare", version="v1-abc", bytes=1)
    _write_tree(_paths(node_root, "v1-abc")[0], files)
    wrong_base = {"kind": "peft", "base_path": _base(tmp_path, hidden=64)}
    refused = python.call("verify", version="v1-abc", files=_listing(files), where="staging", load=wrong_base)
    assert refused["passed"] is False and refused["checks"]["load"]["status"] == "failed"
    assert Q_A in refused["checks"]["load"]["reason"]
    assert not _paths(node_root, "v1-abc")[1].exists()

    skipped = {"kind": "peft", "base_path": str(tmp_path / "absent")}
    result = python.call("verify", version="v1-abc", files=_listing(files), where="staging", load=skipped)
    assert result["passed"] is True and result["checks"]["load"]["status"] == "skipped"


def test_a_truncated_safetensors_file_fails_the_header_check(node_root: Path, tmp_path: Path) -> None:
    whole = _safetensors_bytes(tmp_path)
    truncated = whole[:-10]
    python = PythonNode(node_root)
    python.call("prepare", version="v1-abc", bytes=1)
    _write_tree(_paths(node_root, "v1-abc")[0], {"model.safetensors": truncated})

    # the listing matches the truncated bytes: only the header check can tell
    result = python.call("verify", version="v1-abc", files=_listing({"model.safetensors": truncated}), where="staging")

    checks = result["checks"]
    assert [checks[n]["status"] for n in ("files_present", "sizes", "sha256")] == ["passed"] * 3
    assert checks["load"]["status"] == "failed" and result["passed"] is False
    assert checks["load"]["reason"] == (
        f"model.safetensors: tensors end at byte {len(whole)}, the file has {len(truncated)}"
    )
    assert not _paths(node_root, "v1-abc")[1].exists()
    tiny = tmp_path / "tiny"
    _write_tree(tiny, {"x.safetensors": b"\1\0\0"})
    assert agent.load_check(str(tiny), {}) == {
        "status": "failed",
        "reason": "x.safetensors: shorter than a safetensors header",
    }
    _write_tree(tiny, {"x.safetensors": whole, "y.gguf": b"GGML\3\0\0\0"})
    assert agent.load_check(str(tiny), {}) == {"status": "failed", "reason": "y.gguf: not a GGUF v2/v3 file"}


# == 9. deploy status ==================================================================================


def _key(node: str, number: int, target: str = "cleaner", name: str = "tiny-llama-v1") -> DeploymentKey:
    return DeploymentKey(node, target, f"v{number}-{number:012x}", name, number, f"/srv/{node}/{target}")


PASSED = {"status": "passed", "reason": ""}
CHECKS = {"files_present": PASSED, "sizes": PASSED, "sha256": PASSED, "load": PASSED}
SKIPPED_LOAD = CHECKS | {"load": {"status": "skipped", "reason": "python3 >= 3.11 is not on the node"}}


@pytest.fixture
def status_registry(registry: Registry, tmp_path: Path) -> Registry:
    registry.register(
        llama_folder(tmp_path / "llm"), RegisterOptions(artifact_name="tiny-llama-v1", train_data_tags=["jfleg"])
    )
    return registry


def test_status_shows_the_activated_version_after_a_rollback(status_registry: Registry) -> None:
    records = status_registry.catalog.deployments
    records.set_status(_key("jw2", 1), "activated", actor="alice", checks=CHECKS)
    records.set_status(_key("jw2", 2), "activated", actor="alice", checks=CHECKS)
    records.set_status(_key("jw2", 2), "rolled_back", actor="alice", reason="health check failed")
    records.set_status(_key("jw2", 1), "activated", actor="alice", checks=CHECKS)  # served again
    records.set_status(_key("kcloud", 1), "activated", actor="alice", checks=CHECKS)
    records.set_status(_key("kcloud", 2), "failed", actor="alice", reason="verification failed: sha256")

    rows = status_registry.deployments()
    current = current_deployments(rows)
    assert [(row.node, row.ref, row.status) for row in current] == [
        ("jw2", "tiny-llama-v1@1", "activated"),
        ("kcloud", "tiny-llama-v1@2", "failed"),  # a failure newer than the active version shows
    ]
    matrix = status_matrix(rows)
    assert matrix["nodes"] == ["jw2", "kcloud"]
    (cleaner,) = matrix["artifacts"]
    assert cleaner["target_name"] == "cleaner"
    assert cleaner["cells"]["jw2"]["ref"] == cleaner["cells"]["jw2"]["serving"] == "tiny-llama-v1@1"
    assert cleaner["cells"]["kcloud"]["status"] == "failed"
    assert cleaner["cells"]["kcloud"]["serving"] == "tiny-llama-v1@1"  # what the node still serves


def test_status_markdown_ticks_boxes_only_from_real_passed_checks(status_registry: Registry) -> None:
    records = status_registry.catalog.deployments
    records.set_status(_key("jw2", 1), "activated", actor="alice", checks=CHECKS)
    records.set_status(_key("jw3", 1), "activated", actor="alice", checks=SKIPPED_LOAD)

    markdown = status_markdown(status_registry, status_registry.deployments())
    assert "### cleaner → jw2\n- **tiny-llama-v1@1** at `jw2:/srv/jw2/cleaner/`: activated" in markdown
    assert "  - Training: jfleg" in markdown
    assert "  - [x] sha256: passed" in markdown
    assert "  - [ ] load: skipped (python3 >= 3.11 is not on the node)" in markdown
    status = markdown.split("## Status\n", 1)[1].splitlines()
    assert status == [
        "- [x] cleaner → jw2 (activated), jw3 (activated)",
        "- [x] All checksums verified",
        "- [ ] All nodes tested",  # jw3's load check was skipped: that node was not tested
    ]

    records.set_status(_key("jw3", 1), "activated", actor="alice", checks=CHECKS)
    assert markdown_status(status_registry)[-1] == "- [x] All nodes tested"

    records.set_status(_key("jw3", 2), "verifying", actor="alice")
    assert markdown_status(status_registry) == [
        "- [ ] cleaner → jw2 (activated), jw3 (verifying)",
        "- [ ] All checksums verified",
        "- [ ] All nodes tested",
    ]


def markdown_status(registry: Registry) -> list[str]:
    return status_markdown(registry, registry.deployments()).split("## Status\n", 1)[1].splitlines()


def test_cli_deploy_status_json_markdown_and_table(status_registry: Registry, cli: Callable[..., CliResult]) -> None:
    records = status_registry.catalog.deployments
    records.set_status(_key("jw2", 1), "activated", actor="alice", checks=CHECKS)
    failed = _key("kcloud", 1, target="paraphraser", name="paraphrase-lora-v1")
    records.set_status(failed, "failed", actor="alice", reason="transfer failed: rsync exited 12")

    document = json.loads(cli("deploy", "status", "--json", check=True).stdout)
    assert document["nodes"] == ["jw2", "kcloud"]
    assert {a["target_name"]: sorted(a["cells"]) for a in document["artifacts"]} == {
        "cleaner": ["jw2"],
        "paraphraser": ["kcloud"],
    }
    assert {d["ref"]: d["status"] for d in document["deployments"]} == {
        "tiny-llama-v1@1": "activated",
        "paraphrase-lora-v1@1": "failed",
    }
    only_jw2 = json.loads(cli("deploy", "status", "--json", "--node", "jw2", check=True).stdout)
    assert [d["node"] for d in only_jw2["deployments"]] == ["jw2"]

    markdown = cli("deploy", "status", "--markdown", check=True).stdout
    assert markdown.startswith("# Model Distribution Status\n")
    assert (
        "- [ ] paraphraser → kcloud (failed)" in markdown and "  - Reason: transfer failed: rsync exited 12" in markdown
    )
    assert "- [x] cleaner → jw2 (activated)" in markdown and "- [ ] All checksums verified" in markdown

    table = cli("deploy", "status", check=True).stdout.splitlines()
    assert table[0].split() == ["ARTIFACT", "jw2", "kcloud"]
    assert table[1].split() == ["cleaner", "activated", "1", "-"]
    assert table[2].split() == ["paraphraser", "-", "failed", "1"]
    assert table[3] == "kcloud paraphraser: transfer failed: rsync exited 12"


# == a CLI round trip to a local node ==================================================================


def test_cli_plan_push_status_round_trip_to_a_local_node(
    registry: Registry, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    adapter = seed_004_adapter(tmp_path / "runs" / "llama32_3b_grammar_lora")
    registry.register(adapter, RegisterOptions(artifact_name="grammar-lora-v1", train_data_tags=["jfleg"]))
    base = tmp_path / "bases" / "llama32_3b"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps(base_config()))
    document = fleet_document(tmp_path)
    document["nodes"] = document["nodes"][:1]
    fleet_file = _write_yaml(tmp_path / "fleet.yaml", document)
    out = tmp_path / "plan.json"

    arguments = ("grammar-lora-v1@1=jw2", "--require-stage", "raw", "--fleet", str(fleet_file))
    cli("deploy", "plan", *arguments, "--out", str(out), check=True)
    pushed = json.loads(cli("deploy", "push", str(out), "--json", check=True).stdout)

    assert pushed["ok"] is True
    (outcome,) = pushed["outcomes"]
    assert outcome["status"] == "activated" and outcome["checks"]["load"]["status"] == "passed"
    planned = read_plan(out).artifacts[0]
    serving = tmp_path / "nodes" / "jw2" / "grammar-lora-v1"
    assert os.readlink(serving) == f".modelyard/grammar-lora-v1/{planned.version_dir}"
    on_node = {str(p.relative_to(serving)): p.read_bytes() for p in sorted(serving.rglob("*")) if p.is_file()}
    assert sorted(on_node) == ADAPTER_FILES
    for f in planned.files:  # the manifest's planned digest is the digest of the file the node got
        assert (len(on_node[f.path]), _sha256(on_node[f.path])) == (f.size, f.sha256)

    markdown = cli("deploy", "status", "--markdown", check=True).stdout
    assert "  - [x] load: passed" in markdown
    assert markdown.split("## Status\n", 1)[1].splitlines() == [
        "- [x] grammar-lora-v1 → jw2 (activated)",
        "- [x] All checksums verified",
        "- [x] All nodes tested",
    ]
    again = json.loads(cli("deploy", "push", str(out), "--json", check=True).stdout)
    assert again["outcomes"][0]["up_to_date"] is True
