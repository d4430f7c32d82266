"""Fleet distribution against real nodes: real sshd, ssh and rsync (tests/sshnodes.py), real model
files written with safetensors, the real CLI in a subprocess where a user would type it.

Each node's models root is a directory on this machine, so a test looks at (and damages) what
"the node" holds through its path, exactly as an operator logged into the node would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import CliResult, backdate
from modelyard.catalog.deployments import Deployment
from modelyard.distribute.install import Outcome
from modelyard.distribute.plan import DistributionPlan, PlannedFile, load_assignments, read_plan, version_dir_name
from modelyard.distribute.push import PushOptions, PushReport
from modelyard.errors import InvalidInputError
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry
from sshnodes import ClientKey, NetnsSshNode, SshNode, SshNodeFactory

MODEL = "tiny-chat-v1"
BASE_NAME = "acme/Tiny-Base"  # registered as an artifact, it is tiny-base-v<N> (its last part's slug)
BASE_ARTIFACT = "tiny-base-v1"
ADAPTER = "grammar-lora-v1"
HIDDEN, HEADS, KV_HEADS, LAYERS = 32, 4, 2, 2
MIB = 1024 * 1024
MODELYARD_BIN = Path(sys.executable).with_name("modelyard")


# -- model files, written by the official safetensors library --------------------------------------


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def _base_config(hidden: int = HIDDEN) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": 2 * hidden,
        "vocab_size": 64,
    }


def _weights(path: Path, seed: int, mib: float) -> None:
    """Random float32 weights of about `mib` MiB (random: rsync can neither compress nor dedupe them)."""
    rng = np.random.default_rng(seed)
    rows = max(1, int(mib * MIB) // (4 * HIDDEN))
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((rows, HIDDEN)).astype(np.float32),
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32),
        },
        str(path),
        metadata={"format": "pt"},
    )


def _model_dir(root: Path, *, seed: int = 0, mib: float | None = None, hidden: int = HIDDEN) -> Path:
    """A Llama-style Hugging Face folder: config, tokenizer config, weights. Versions made with
    another seed differ only in their weights, and by default in the weights' size too (see
    `test_a_new_file_with_the_size_and_mtime_of_an_old_one_is_sent_not_hardlinked`)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "config.json", _base_config(hidden))
    _write_json(root / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048})
    _weights(root / "model.safetensors", seed, mib if mib is not None else 0.05 + 0.01 * seed)
    backdate(root)
    return root


def _adapter_dir(root: Path, base_model: str, *, hidden: int = HIDDEN, r: int = 4, seed: int = 0) -> Path:
    """A PEFT LoRA adapter on q_proj and v_proj of layer 0, shaped for a base of `hidden` width."""
    rng = np.random.default_rng(seed)
    head_dim = hidden // HEADS
    prefix = "base_model.model.model.layers.0.self_attn"
    tensors = {
        f"{prefix}.q_proj.lora_A.weight": (r, hidden),
        f"{prefix}.q_proj.lora_B.weight": (HEADS * head_dim, r),
        f"{prefix}.v_proj.lora_A.weight": (r, hidden),
        f"{prefix}.v_proj.lora_B.weight": (KV_HEADS * head_dim, r),
    }
    root.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: rng.standard_normal(shape).astype(np.float32) for name, shape in tensors.items()},
        str(root / "adapter_model.safetensors"),
    )
    _write_json(
        root / "adapter_config.json",
        {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": r,
            "lora_alpha": 2 * r,
            "lora_dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"],
            "bias": "none",
        },
    )
    _write_json(root / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>"})
    _write_json(root / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>"})
    backdate(root)
    return root


def _register(registry: Registry, directory: Path, name: str, *, link: bool = False) -> str:
    return registry.register(directory, RegisterOptions(artifact_name=name), link=link).version.ref


# -- fleets, plans, pushes -------------------------------------------------------------------------


def _write_fleet(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A fleet file (JSON is YAML) from entries such as `node.fleet_entry(health=...)`."""
    path.write_text(json.dumps({"nodes": entries}, indent=2))
    return path


def _plan(registry: Registry, fleet_file: Path, *assignments: str) -> DistributionPlan:
    """Stage is not the point of these tests: any stage may go."""
    return registry.plan_deployment(list(assignments), fleet=registry.fleet(fleet_file), require_stage="any")


def _next_second() -> None:
    """Wait for the clock's next whole second. rsync --link-dest takes a file on the node with the
    size and the mtime (in whole seconds) of a file to send for that file: a version's
    artifact_manifest.json written in the second the previous version's was would be hardlinked
    instead of sent (see test_a_new_file_with_the_size_and_mtime_of_an_old_one_is_sent_not_hardlinked).
    Pushes of a new version wait for this, so that the other tests do not depend on that bug."""
    now = time.time()
    time.sleep(int(now) + 1.01 - now)


def _push(registry: Registry, plan: DistributionPlan, **options: Any) -> PushReport:
    return registry.push(plan, PushOptions(**options))


def _by_node(report: PushReport) -> dict[str, Outcome]:
    return {o.node: o for o in report.outcomes + report.held_back}


def _target_dir(node: SshNode, target: str) -> Path:
    return node.models_root / ".modelyard" / target


def _serving(node: SshNode, target: str) -> Path:
    return node.models_root / target


def _served_version(node: SshNode, target: str) -> str | None:
    """The version directory the serving symlink points at, or None when there is no symlink."""
    path = _serving(node, target)
    if not path.is_symlink():
        assert not path.exists(), f"{path} exists and is not a symlink"
        return None
    link = os.readlink(path)
    assert link.startswith(f".modelyard/{target}/"), link
    return link.rsplit("/", 1)[1]


def _version_dirs(node: SshNode, target: str) -> set[str]:
    base = _target_dir(node, target)
    if not base.is_dir():
        return set()
    return {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "records"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _planned(plan: DistributionPlan, ref: str) -> dict[str, str]:
    """The files the plan sends for `ref` with the registry's digests (its manifest included)."""
    item = next(item for item in plan.artifacts if item.ref == ref)
    return {f.path: f.sha256 for f in item.files}


def _node_files(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): _sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def _row(registry: Registry, node: str, version_dir: str) -> Deployment:
    rows = [row for row in registry.deployments(node=node) if row.version_dir == version_dir]
    assert len(rows) == 1, rows
    return rows[0]


def _untouched(node: SshNode) -> bool:
    return not any(node.models_root.iterdir())


def _ok_cli(result: CliResult) -> CliResult:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _activation_log(node: SshNode) -> list[str]:
    log = node.directory / "activations.log"
    return log.read_text().split() if log.exists() else []


def _logging_activate(node: SshNode) -> str:
    """An activate command that appends the version it activates to a log on the node."""
    return f'echo "$MODELYARD_VERSION_DIR" >> {node.directory / "activations.log"}'


# -- 1. three nodes: push, status, up to date, link-dest, keep K -------------------------------------


def test_three_nodes_get_the_model_then_new_versions_reuse_files_and_keep_two(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    nodes = ssh_nodes(3)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [n.fleet_entry() for n in nodes])
    targets = ",".join(n.name for n in nodes)
    v1 = _register(registry, _model_dir(tmp_path / "run1", seed=1), MODEL)
    plan1 = _plan(registry, fleet_file, f"{v1}={targets}")
    item1 = plan1.artifact(v1)

    report = _push(registry, plan1, parallel=3)

    assert report.ok, report.to_dict()
    assert {o.node: o.status for o in report.outcomes} == {n.name: "activated" for n in nodes}
    assert all(o.transferred and not o.up_to_date for o in report.outcomes)
    expected = _planned(plan1, v1)
    outcomes = _by_node(report)
    for node in nodes:
        assert _serving(node, MODEL).is_symlink()
        assert _served_version(node, MODEL) == item1.version_dir
        assert _node_files(_serving(node, MODEL)) == expected  # the registry's digests, manifest included
        with registry.store.open(expected["model.safetensors"]) as stored:
            assert (_serving(node, MODEL) / "model.safetensors").read_bytes() == stored.read()
        assert {name: check["status"] for name, check in outcomes[node.name].checks.items()} == {
            "files_present": "passed",
            "sizes": "passed",
            "sha256": "passed",
            "load": "passed",
        }
        assert _row(registry, node.name, item1.version_dir).status == "activated"

    status = _ok_cli(cli("deploy", "status", "--json")).json()
    assert status["nodes"] == sorted(n.name for n in nodes)
    (cells,) = [a["cells"] for a in status["artifacts"] if a["target_name"] == MODEL]
    assert {name: (cell["status"], cell["serving"]) for name, cell in cells.items()} == {
        n.name: ("activated", v1) for n in nodes
    }

    again = _push(registry, plan1, parallel=3)
    assert again.ok and [o.up_to_date for o in again.outcomes] == [True, True, True]
    assert not any(o.transferred for o in again.outcomes)

    # v2: only the weights changed; config.json and tokenizer_config.json are hardlinked on the node
    v2 = _register(registry, _model_dir(tmp_path / "run2", seed=2), MODEL)
    plan2 = _plan(registry, fleet_file, f"{v2}={targets}")
    item2 = plan2.artifact(v2)
    _next_second()
    assert _push(registry, plan2, parallel=3).ok
    for node in nodes:
        old, new = _target_dir(node, MODEL) / item1.version_dir, _target_dir(node, MODEL) / item2.version_dir
        assert (old / "config.json").stat().st_ino == (new / "config.json").stat().st_ino
        assert (old / "tokenizer_config.json").stat().st_ino == (new / "tokenizer_config.json").stat().st_ino
        assert (old / "model.safetensors").stat().st_ino != (new / "model.safetensors").stat().st_ino
        assert _served_version(node, MODEL) == item2.version_dir
        assert _node_files(_serving(node, MODEL)) == _planned(plan2, v2)

    # v3: the node keeps the newest two verified versions (K=2 by default)
    v3 = _register(registry, _model_dir(tmp_path / "run3", seed=3), MODEL)
    plan3 = _plan(registry, fleet_file, f"{v3}={targets}")
    item3 = plan3.artifact(v3)
    _next_second()
    assert _push(registry, plan3, parallel=3).ok
    for node in nodes:
        assert _version_dirs(node, MODEL) == {item2.version_dir, item3.version_dir}
        assert sorted(p.name for p in (_target_dir(node, MODEL) / "records").iterdir()) == sorted(
            [f"{item2.version_dir}.json", f"{item3.version_dir}.json"]
        )
        assert not (_target_dir(node, MODEL) / ".staging").exists() or not any(
            (_target_dir(node, MODEL) / ".staging").iterdir()
        )
        statuses = {row.version_dir: row.status for row in registry.deployments(node=node.name)}
        assert item1.version_dir not in statuses  # the removed version's row went with it
        assert statuses[item3.version_dir] == "activated"


def test_a_new_file_with_the_size_and_mtime_of_an_old_one_is_sent_not_hardlinked(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    # Two checkpoints of one model (same size) copied from the training cluster with their timestamps
    # (rsync -a, tar), registered with link=True: the store's blobs keep the files' inodes and mtimes.
    stamp = 1_735_689_600
    runs = [_model_dir(tmp_path / f"run{seed}", seed=seed, mib=0.1) for seed in (1, 2)]
    for path in (p for run in runs for p in run.rglob("*")):
        os.utime(path, (stamp, stamp))
    v1 = _register(registry, runs[0], MODEL, link=True)
    v2 = _register(registry, runs[1], MODEL, link=True)
    weights = [next(f for f in registry.show(ref).manifest.files if f.path == "model.safetensors") for ref in (v1, v2)]
    assert weights[0].size == weights[1].size and weights[0].sha256 != weights[1].sha256
    assert _push(registry, _plan(registry, fleet_file, f"{v1}={node.name}")).ok
    plan2 = _plan(registry, fleet_file, f"{v2}={node.name}")
    _next_second()

    attempts = [_push(registry, plan2).outcomes[0] for _ in range(2)]  # the second one is the retry

    assert attempts[-1].status == "activated", [o.reason for o in attempts]
    assert _node_files(_serving(node, MODEL)) == _planned(plan2, v2)


def test_a_plan_requiring_production_refuses_a_raw_version_before_anything_is_sent(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)

    with pytest.raises(InvalidInputError) as refused:
        registry.plan_deployment([f"{ref}={node.name}"], fleet=registry.fleet(fleet_file))

    assert "raw version" in refused.value.message and "requires production" in refused.value.message
    assert _untouched(node) and registry.deployments() == []


# -- 2. adapters and their base models ---------------------------------------------------------------


def test_an_adapter_is_checked_against_a_base_the_fleet_file_declares_on_the_node(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    base_on_node = _model_dir(node.directory / "bases" / "tiny-base")  # already on the machine, outside the root
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry(base_models={BASE_NAME: str(base_on_node)})])
    adapter = _register(registry, _adapter_dir(tmp_path / "adapter", BASE_NAME), ADAPTER)

    plan = _plan(registry, fleet_file, f"{adapter}={node.name}")
    (item,) = plan.artifacts
    assert item.profile == "peft-adapter" and item.base_ref is None
    assert (item.nodes[0].base_path, item.nodes[0].base_source) == (str(base_on_node), "fleet")
    report = _push(registry, plan)

    (outcome,) = report.outcomes
    assert outcome.status == "activated", outcome.reason
    assert outcome.checks["load"]["status"] == "passed"
    assert "4 tensors match the base config (r=4)" in outcome.checks["load"]["reason"]
    assert sorted(_node_files(_serving(node, ADAPTER))) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "artifact_manifest.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ]


def test_a_registered_base_is_shipped_first_and_the_adapter_is_checked_against_its_serving_path(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    base = _register(registry, _model_dir(tmp_path / "base"), BASE_ARTIFACT)
    adapter = _register(registry, _adapter_dir(tmp_path / "adapter", BASE_NAME), ADAPTER)

    plan = _plan(registry, fleet_file, f"{adapter}={node.name}")
    assert [(item.ref, item.dependency) for item in plan.artifacts] == [(base, True), (adapter, False)]
    target = plan.artifact(adapter).nodes[0]
    assert (target.base_path, target.base_source) == (str(_serving(node, BASE_ARTIFACT)), "registry")
    report = _push(registry, plan)

    assert [(o.ref, o.status) for o in report.outcomes] == [(base, "activated"), (adapter, "activated")]
    load = report.outcomes[1].checks["load"]
    assert load["status"] == "passed" and "match the base config" in load["reason"]
    assert (_serving(node, BASE_ARTIFACT) / "config.json").is_file()
    assert _served_version(node, ADAPTER) == plan.artifact(adapter).version_dir


def test_an_adapter_whose_base_resolves_nowhere_is_refused_before_anything_is_sent(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    node, other = ssh_nodes(2)
    # `other` declares the base, `node` does not: the plan names the node that lacks it
    fleet_file = _write_fleet(
        tmp_path / "fleet.yaml",
        [node.fleet_entry(), other.fleet_entry(base_models={"acme/nowhere-v1": str(other.directory)})],
    )
    adapter = _register(registry, _adapter_dir(tmp_path / "adapter", "acme/nowhere-v1"), ADAPTER)

    with pytest.raises(InvalidInputError) as refused:
        _plan(registry, fleet_file, f"{adapter}={other.name},{node.name}")

    message = refused.value.message
    assert f"node {node.name} has no base model acme/nowhere-v1" in message
    assert "base_models" in message and "nowhere-v1" in message
    assert _untouched(node) and _untouched(other) and registry.deployments() == []


def test_an_adapter_shaped_for_another_base_fails_its_load_check_and_is_never_served(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    base_on_node = _model_dir(node.directory / "bases" / "wide-base", hidden=64)  # 64 wide, the adapter 32
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry(base_models={BASE_NAME: str(base_on_node)})])
    adapter = _register(registry, _adapter_dir(tmp_path / "adapter", BASE_NAME, hidden=HIDDEN), ADAPTER)
    plan = _plan(registry, fleet_file, f"{adapter}={node.name}")

    (outcome,) = _push(registry, plan).outcomes

    assert outcome.status == "failed"
    assert outcome.reason.startswith("verification failed: load: ")
    assert "q_proj.lora_A.weight: input size 32 but the base model's q_proj has 64" in outcome.reason
    assert outcome.checks["sha256"]["status"] == "passed" and outcome.checks["load"]["status"] == "failed"
    assert _served_version(node, ADAPTER) is None
    row = _row(registry, node.name, plan.artifacts[0].version_dir)
    assert row.status == "failed" and "input size 32" in row.reason
    assert _version_dirs(node, ADAPTER) == set()  # it never left staging


# -- 3. activate and health: a failing or hanging health check switches back -----------------------------


def _push_v1_then_v2(
    registry: Registry, nodes: list[SshNode], tmp_path: Path, v2_entries: list[dict[str, Any]]
) -> tuple[str, str, PushReport]:
    """v1 activated on the nodes with a passing health check, then v2 pushed with the fleet
    entries given: (v1's version dir, v2's, v2's report)."""
    fleet_file = tmp_path / "fleet.yaml"
    _write_fleet(fleet_file, [n.fleet_entry(activate=_logging_activate(n), health="true") for n in nodes])
    targets = ",".join(n.name for n in nodes)
    v1 = _register(registry, _model_dir(tmp_path / "run1", seed=1), MODEL)
    plan1 = _plan(registry, fleet_file, f"{v1}={targets}")
    assert _push(registry, plan1, parallel=len(nodes)).ok
    _write_fleet(fleet_file, v2_entries)
    v2 = _register(registry, _model_dir(tmp_path / "run2", seed=2), MODEL)
    plan2 = _plan(registry, fleet_file, f"{v2}={targets}")
    _next_second()
    return plan1.artifact(v1).version_dir, plan2.artifact(v2).version_dir, _push(registry, plan2, parallel=len(nodes))


def test_a_failing_health_check_switches_back_to_the_previous_version_and_activates_it(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    entry = node.fleet_entry(activate=_logging_activate(node), health="test -f /nonexistent", health_timeout=2)

    first, second, report = _push_v1_then_v2(registry, [node], tmp_path, [entry])

    (outcome,) = report.outcomes
    assert not report.ok and outcome.status == "failed"
    assert outcome.reason.startswith("health check did not pass within 2 s (exit 1"), outcome.reason
    assert outcome.reason.endswith(f"switched back to {first}")
    assert outcome.rolled_back_to == first
    assert _served_version(node, MODEL) == first
    assert _activation_log(node) == [first, second, first]  # the previous version was activated again
    assert _row(registry, node.name, second).status == "failed"
    assert "health check" in _row(registry, node.name, second).reason
    assert _row(registry, node.name, first).status == "activated"
    assert _version_dirs(node, MODEL) == {first, second}  # verified and kept, not served


def test_a_hanging_health_check_is_cut_off_at_its_timeout_and_switched_back(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    entry = node.fleet_entry(activate=_logging_activate(node), health="sleep 10", health_timeout=2)

    first, second, report = _push_v1_then_v2(registry, [node], tmp_path, [entry])

    (outcome,) = report.outcomes
    assert outcome.status == "failed"
    assert outcome.reason.startswith("health check did not pass within 2 s (timed out)"), outcome.reason
    assert _served_version(node, MODEL) == first and outcome.rolled_back_to == first
    assert _activation_log(node) == [first, second, first]
    assert outcome.seconds < 7, f"the health check was given 2 s and the push waited {outcome.seconds:.1f} s"


@pytest.mark.parametrize("python", ["python3", "/nonexistent/python3"], ids=["agent", "shell-fallback"])
def test_a_first_version_that_fails_its_health_check_leaves_no_serving_path(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path, python: str
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(
        tmp_path / "fleet.yaml",
        [node.fleet_entry(activate=_logging_activate(node), health="exit 3", health_timeout=1, python=python)],
    )
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")

    (outcome,) = _push(registry, plan).outcomes

    assert outcome.status == "failed"
    assert outcome.reason.startswith("health check did not pass within 1 s (exit 3")
    assert outcome.reason.endswith("the serving path was removed (no earlier version)")
    assert outcome.rolled_back_to is None
    assert not os.path.lexists(_serving(node, MODEL))
    assert _activation_log(node) == [plan.artifacts[0].version_dir]  # nothing earlier to activate again
    assert _row(registry, node.name, plan.artifacts[0].version_dir).status == "failed"


# -- 4. canaries --------------------------------------------------------------------------------------


def test_a_failed_canary_holds_the_other_nodes_back_and_a_healthy_one_lets_them_go(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    canary, second, third = ssh_nodes(3)
    fleet_file = tmp_path / "fleet.yaml"
    _write_fleet(
        fleet_file,
        [canary.fleet_entry(health="false", health_timeout=1), second.fleet_entry(), third.fleet_entry()],
    )
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    targets = f"{canary.name},{second.name},{third.name}"
    plan = _plan(registry, fleet_file, f"{ref}={targets}")
    version_dir = plan.artifacts[0].version_dir

    report = _push(registry, plan, canary=1, parallel=3)

    assert not report.ok
    assert [(o.node, o.status) for o in report.outcomes] == [(canary.name, "failed")]
    assert "health check" in report.outcomes[0].reason
    assert [(o.node, o.status) for o in report.held_back] == [(second.name, "pending"), (third.name, "pending")]
    for node in (second, third):
        assert _by_node(report)[node.name].reason == f"held back: canary {canary.name} failed"
        assert _untouched(node)
        row = _row(registry, node.name, version_dir)
        assert row.status == "pending" and row.reason.startswith("held back")

    _write_fleet(fleet_file, [canary.fleet_entry(health="true"), second.fleet_entry(), third.fleet_entry()])
    healthy = _push(registry, _plan(registry, fleet_file, f"{ref}={targets}"), canary=1, parallel=3)

    assert healthy.ok and healthy.held_back == []
    assert {o.node: o.status for o in healthy.outcomes} == dict.fromkeys(
        (canary.name, second.name, third.name), "activated"
    )
    assert all(_served_version(n, MODEL) == version_dir for n in (canary, second, third))


# -- 5. drift: deploy verify finds it, push --repair fixes only what is damaged ---------------------------


def _flip_byte(path: Path, offset: int, *, keep_mtime: bool = False) -> None:
    """Damage one byte in place (same inode, same size), as a disk or a careless edit would."""
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:  # bit rot: nothing in the file's metadata changes
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _counting_python(node: SshNode) -> tuple[str, Path]:
    """A python3 for the node's agent that logs how many bytes each call received on its standard
    input (the request and any repair payload): what the node was sent, measured on the node."""
    log = node.directory / "agent-stdin-bytes.log"
    wrapper = node.directory / "python3-counting"
    wrapper.write_text(
        "#!/bin/sh\n"
        'tmp=$(mktemp); cat > "$tmp"\n'
        f'wc -c < "$tmp" >> {log}\n'
        '/usr/bin/python3 "$@" < "$tmp"; status=$?\n'
        'rm -f "$tmp"; exit $status\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper), log


def _logged_sizes(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_drift_is_reported_by_deploy_verify_and_push_repair_sends_only_the_damaged_block(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    edited, deleted = ssh_nodes(2)
    python, stdin_log = _counting_python(edited)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [edited.fleet_entry(python=python), deleted.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run", mib=12), MODEL)  # 3 blocks of 4 MiB and a bit
    plan = _plan(registry, fleet_file, f"{ref}={edited.name},{deleted.name}")
    version_dir = plan.artifacts[0].version_dir
    expected = _planned(plan, ref)
    assert _push(registry, plan, parallel=2).ok
    weights = _serving(edited, MODEL) / "model.safetensors"
    weights_inode = weights.stat().st_ino
    _flip_byte(weights, 6 * MIB + 5)  # in the second 4 MiB block
    (_serving(deleted, MODEL) / "tokenizer_config.json").unlink()

    report = registry.verify_deployments(registry.fleet(fleet_file))

    findings = {finding.node: finding for finding in report.findings}
    assert not report.ok and {n: f.state for n, f in findings.items()} == {
        edited.name: "drifted",
        deleted.name: "drifted",
    }
    assert findings[edited.name].changes == {"edited": ["model.safetensors"]}
    assert "SHA-256 differs: model.safetensors" in findings[edited.name].reason
    assert findings[deleted.name].changes == {"deleted": ["tokenizer_config.json"]}
    assert "missing: tokenizer_config.json" in findings[deleted.name].reason
    for node in (edited, deleted):
        row = _row(registry, node.name, version_dir)
        assert row.status == "failed" and row.reason.startswith("drift: ")
    verified = cli("deploy", "verify", "--fleet", str(fleet_file))
    assert verified.returncode == 1, verified.stderr
    assert "DRIFTED" in verified.stdout and "model.safetensors" in verified.stdout
    assert "tokenizer_config.json" in verified.stdout

    plain = _by_node(_push(registry, plan, parallel=2))
    for node in (edited, deleted):
        assert plain[node.name].status == "failed"
        assert plain[node.name].reason.startswith("the copy on the node is damaged: ")
        assert plain[node.name].reason.endswith("run `modelyard deploy push PLAN --repair`")
    assert "model.safetensors" in plain[edited.name].reason
    assert "tokenizer_config.json" in plain[deleted.name].reason

    logged_before_repair = len(_logged_sizes(stdin_log))
    repaired = _by_node(_push(registry, plan, parallel=2, repair=True))

    assert repaired[edited.name].status == "activated", repaired[edited.name].reason
    assert repaired[edited.name].repaired == ["model.safetensors"]
    assert repaired[deleted.name].status == "activated", repaired[deleted.name].reason
    assert repaired[deleted.name].repaired == ["tokenizer_config.json"]
    for node in (edited, deleted):
        assert _node_files(_serving(node, MODEL)) == expected
        assert _served_version(node, MODEL) == version_dir
    assert weights.stat().st_ino != weights_inode  # repaired in a copy, renamed over the damaged file
    # What the node received during the repair: one 4 MiB block with its request, not the 12 MiB file.
    sizes = _logged_sizes(stdin_log)[logged_before_repair:]
    assert 4 * MIB <= max(sizes) < 4 * MIB + 64 * 1024, sizes
    assert sum(sizes) < 5 * MIB, sizes
    weights_planned = next(f for f in plan.artifacts[0].files if f.path == "model.safetensors")
    ranges = registry.settings.home / "ranges" / f"{weights_planned.sha256}-{4 * MIB}"
    blocks = -(-weights_planned.size // (4 * MIB))
    assert blocks == 4 and ranges.stat().st_size == 32 * blocks  # the store's block digests, cached
    assert registry.verify_deployments(registry.fleet(fleet_file)).ok


@dataclass
class Served:
    node: SshNode
    fleet_file: Path
    plan: DistributionPlan
    ref: str


def _served_with_an_added_file(registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path) -> Served:
    """One node serving a version into which someone put notes.txt."""
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")
    assert _push(registry, plan).ok
    (_serving(node, MODEL) / "notes.txt").write_text("left by someone on the node\n")
    return Served(node, fleet_file, plan, ref)


def test_a_file_added_to_a_served_version_is_drift_and_push_repair_removes_it(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    served = _served_with_an_added_file(registry, ssh_nodes, tmp_path)

    (finding,) = registry.verify_deployments(registry.fleet(served.fleet_file)).findings
    verified = cli("deploy", "verify", "--fleet", str(served.fleet_file), "--json")
    (plain,) = _push(registry, served.plan).outcomes

    assert finding.state == "drifted" and finding.changes == {"added": ["notes.txt"]}
    assert "not in the manifest: notes.txt" in finding.reason
    assert verified.returncode == 1 and verified.json()["findings"][0]["state"] == "drifted"
    assert plain.status == "failed" and "damaged" in plain.reason and "notes.txt" in plain.reason
    assert "--repair" in plain.reason
    assert _served_version(served.node, MODEL) == served.plan.artifacts[0].version_dir  # still served, flagged

    (repaired,) = _push(registry, served.plan, repair=True).outcomes

    assert repaired.status == "activated", repaired.reason
    assert repaired.repaired == ["removed notes.txt"]
    assert _node_files(_serving(served.node, MODEL)) == _planned(served.plan, served.ref)
    assert registry.verify_deployments(registry.fleet(served.fleet_file)).ok


def test_a_plain_push_after_drift_with_unchanged_mtime_does_not_mark_the_node_activated(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run", mib=1), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")
    assert _push(registry, plan).ok
    _flip_byte(_serving(node, MODEL) / "model.safetensors", MIB // 2, keep_mtime=True)
    (finding,) = registry.verify_deployments(registry.fleet(fleet_file)).findings
    assert finding.state == "drifted" and "SHA-256 differs: model.safetensors" in finding.reason

    (outcome,) = _push(registry, plan).outcomes

    assert outcome.status == "failed" and "--repair" in outcome.reason, outcome
    assert _row(registry, node.name, plan.artifacts[0].version_dir).status == "failed"


# -- 7. rollback --------------------------------------------------------------------------------------


def test_deploy_rollback_serves_the_previous_version_and_refuses_when_there_is_none(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    node, single = ssh_nodes(2)
    fleet_file = _write_fleet(
        tmp_path / "fleet.yaml",
        [node.fleet_entry(activate=_logging_activate(node), health="true"), single.fleet_entry()],
    )
    v1 = _register(registry, _model_dir(tmp_path / "run1", seed=1), MODEL)
    plan1 = _plan(registry, fleet_file, f"{v1}={node.name},{single.name}")
    assert _push(registry, plan1, parallel=2).ok
    v2 = _register(registry, _model_dir(tmp_path / "run2", seed=2), MODEL)
    plan2 = _plan(registry, fleet_file, f"{v2}={node.name}")
    _next_second()
    assert _push(registry, plan2).ok
    first, second = plan1.artifacts[0].version_dir, plan2.artifacts[0].version_dir
    assert _served_version(node, MODEL) == second

    rolled = cli("deploy", "rollback", MODEL, "--node", node.name, "--fleet", str(fleet_file), "--json")

    _ok_cli(rolled)
    assert rolled.json()["status"] == "activated" and rolled.json()["rolled_back_to"] == first
    assert _served_version(node, MODEL) == first
    assert _activation_log(node) == [first, second, first]  # activate ran for the restored version
    assert _row(registry, node.name, second).status == "rolled_back"
    assert _row(registry, node.name, first).status == "activated"
    assert _node_files(_serving(node, MODEL)) == _planned(plan1, v1)

    refused = cli("deploy", "rollback", MODEL, "--node", single.name, "--fleet", str(fleet_file))

    assert refused.returncode == 4, refused.stderr
    assert refused.stderr.startswith(f"error: node {single.name} holds no earlier verified version of {MODEL}")
    assert _served_version(single, MODEL) == first
    assert _row(registry, single.name, first).status == "activated"


# -- 8. faults ----------------------------------------------------------------------------------------


def test_unreachable_refused_and_impostor_nodes_fail_with_the_reason_while_the_others_finish(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    healthy, stopped, wrong_key, impostor = ssh_nodes(4)
    stranger = ClientKey.generate(tmp_path / "stranger_ed25519")
    # impostor's address with healthy's host key: a host that is not who it claims to be
    other_key = healthy.known_hosts.read_text().split(maxsplit=1)[1]
    wrong_known_hosts = tmp_path / "known_hosts_other_key"
    wrong_known_hosts.write_text(f"[{impostor.host}]:{impostor.port} {other_key}")
    known_before = wrong_known_hosts.read_text()
    fleet_file = _write_fleet(
        tmp_path / "fleet.yaml",
        [
            healthy.fleet_entry(),
            stopped.fleet_entry(),
            wrong_key.fleet_entry(identity_file=str(stranger.identity_file)),
            impostor.fleet_entry(known_hosts=str(wrong_known_hosts)),
        ],
    )
    stopped.stop()
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={healthy.name},{stopped.name},{wrong_key.name},{impostor.name}")

    report = _push(registry, plan, parallel=4)

    outcomes = _by_node(report)
    assert not report.ok
    assert outcomes[healthy.name].status == "activated"
    assert _served_version(healthy, MODEL) == plan.artifacts[0].version_dir
    why = {
        stopped: "Connection refused",
        wrong_key: "Permission denied",
        impostor: "Host key verification failed",
    }
    for node, ssh_says in why.items():
        outcome = outcomes[node.name]
        assert outcome.status == "failed"
        assert outcome.reason.startswith(f"cannot reach node {node.name} ({node.user}@{node.host}:{node.port})")
        assert ssh_says in outcome.reason, outcome.reason
        assert _untouched(node)
        assert _row(registry, node.name, plan.artifacts[0].version_dir).status == "failed"
    assert wrong_known_hosts.read_text() == known_before  # the impostor's key was never added


def test_a_node_without_python_is_served_through_openssl_and_its_load_check_is_not_a_pass(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry(python="/nonexistent/python3")])
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")

    (outcome,) = _push(registry, plan).outcomes

    assert outcome.status == "activated", outcome.reason
    assert [outcome.checks[name]["status"] for name in ("files_present", "sizes", "sha256")] == ["passed"] * 3
    assert outcome.checks["load"] == {"status": "skipped", "reason": "python3 >= 3.11 is not on the node"}
    assert _node_files(_serving(node, MODEL)) == _planned(plan, ref)
    (again,) = _push(registry, plan).outcomes
    assert again.up_to_date
    checklist = _ok_cli(cli("deploy", "status", "--markdown")).stdout
    assert "- [x] All checksums verified" in checklist
    assert "- [ ] All nodes tested" in checklist  # a skipped load check tested nothing
    assert "load: skipped (python3 >= 3.11 is not on the node)" in checklist

    # two more versions: the shell agent keeps the newest two by their records' times, like the agent
    kept = []
    for seed in (2, 3):
        newer = _register(registry, _model_dir(tmp_path / f"run{seed}", seed=seed), MODEL)
        newer_plan = _plan(registry, fleet_file, f"{newer}={node.name}")
        _next_second()
        (pushed,) = _push(registry, newer_plan).outcomes
        assert pushed.status == "activated", pushed.reason
        kept.append(newer_plan.artifacts[0].version_dir)
    assert _version_dirs(node, MODEL) == set(kept)
    assert _served_version(node, MODEL) == kept[-1]


@contextlib.contextmanager
def _small_tmpfs(directory: Path, size: str) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the node's models root needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def test_a_full_disk_on_the_node_fails_the_push_before_sending_and_exposes_nothing(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run", mib=4), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")

    with _small_tmpfs(node.models_root, "2m"):
        (outcome,) = _push(registry, plan).outcomes
        staged = [p for p in node.models_root.rglob("*") if p.is_file()]
        exposed = os.path.lexists(_serving(node, MODEL))

    assert outcome.status == "failed"
    assert f"node {node.name}: not enough disk under {node.models_root}" in outcome.reason
    assert staged == []  # not a byte sent
    assert not exposed
    assert _row(registry, node.name, plan.artifacts[0].version_dir).status == "failed"


def test_paths_that_would_leave_the_models_root_are_refused_before_anything_is_sent(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    assignments = tmp_path / "assignments.yaml"
    assignments.write_text(f"assignments:\n  - artifact: {ref}\n    targets: {node.name}\n    target_name: ../x\n")

    with pytest.raises(InvalidInputError) as escaping_name:
        registry.plan_deployment(load_assignments(assignments), fleet=registry.fleet(fleet_file), require_stage="any")
    planned = cli(
        "deploy",
        "plan",
        str(assignments),
        "--fleet",
        str(fleet_file),
        "--require-stage",
        "any",
        "--out",
        str(tmp_path / "p.json"),
    )

    assert escaping_name.value.field == "target_name" and "'../x'" in escaping_name.value.message
    assert planned.returncode == 3 and "target name '../x'" in planned.stderr
    assert not (tmp_path / "p.json").exists()

    # a plan edited by hand after planning: its serving path points outside the node's models root
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")
    document = json.loads(plan.to_json())
    outside = str(node.directory / "elsewhere" / MODEL)
    document["artifacts"][0]["nodes"][0]["serving_path"] = outside
    edited = tmp_path / "edited-plan.json"
    edited.write_text(json.dumps(document))

    with pytest.raises(InvalidInputError) as escaping_path:
        read_plan(edited)
    pushed = cli("deploy", "push", str(edited))

    assert f"serving path {outside} is not {node.models_root / MODEL}" in escaping_path.value.message
    assert pushed.returncode == 3 and f"serving path {outside}" in pushed.stderr
    assert _untouched(node) and not (node.directory / "elsewhere").exists()
    assert registry.deployments() == []


def test_a_hand_edited_plan_whose_file_path_leaves_the_version_is_refused_before_anything_is_sent(
    registry: Registry, ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    (node,) = ssh_nodes(1)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [node.fleet_entry()])
    ref = _register(registry, _model_dir(tmp_path / "run"), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={node.name}")
    document = json.loads(plan.to_json())
    item = document["artifacts"][0]
    escaping = "../../../../escaped.json"  # from <home>/tmp/deploy-*/<version>/ up to the home's parent
    next(f for f in item["files"] if f["path"] == "config.json")["path"] = escaping
    item["version_dir"] = version_dir_name(item["number"], [PlannedFile.model_validate(f) for f in item["files"]])
    edited = tmp_path / "edited-plan.json"
    edited.write_text(json.dumps(document))

    with pytest.raises(InvalidInputError) as refused:
        read_plan(edited)

    assert escaping in refused.value.message


# -- 9. fleet check -------------------------------------------------------------------------------------


def test_fleet_check_reports_each_reachable_node_and_the_unreachable_one(
    ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    first, second, down = ssh_nodes(3)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [n.fleet_entry() for n in (first, second, down)])
    down.stop()

    checked = cli("fleet", "check", "--fleet", str(fleet_file), "--json")

    assert checked.returncode == 1, checked.stderr
    by_node = {entry["node"]: entry for entry in checked.json()}
    for node in (first, second):
        entry = by_node[node.name]
        assert entry["reachable"] and entry["ok"] and entry["problems"] == []
        assert entry["address"] == f"{node.user}@{node.host}:{node.port}"
        assert entry["free_bytes"] > 0 and entry["root_exists"] is True
        assert entry["hasher"].startswith("python 3.") and "hashlib" in entry["hasher"]
        assert entry["tools"]["rsync"] and entry["tools"]["openssl"]
    assert by_node[down.name]["reachable"] is False and by_node[down.name]["ok"] is False
    assert by_node[down.name]["reason"].startswith(f"cannot reach node {down.name}")
    assert "Connection refused" in by_node[down.name]["reason"]


# -- 10. pull over SSH -----------------------------------------------------------------------------------


def test_a_node_pulls_over_ssh_verifies_every_file_before_serving_and_reports_back(
    registry: Registry, ssh_nodes: SshNodeFactory, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # The registry's host is an sshd on this machine: `ssh host modelyard --home HOME deploy describe` runs there.
    (registry_host,) = ssh_nodes(1, prefix="registryhost")
    ref = _register(registry, _model_dir(tmp_path / "run", mib=1), MODEL)
    described = registry.describe_for_pull(ref, require_stage="any")
    files = {f["path"]: f for f in described["artifact"]["files"]}
    version_dir = described["artifact"]["version_dir"]
    models = tmp_path / "edge-models"
    source = f"ssh://{registry_host.user}@{registry_host.host}:{registry_host.port}{registry.settings.home}"

    def pull() -> CliResult:
        return cli(
            "pull", ref, "--to", str(models), "--from", source,
            "--identity-file", str(registry_host.identity_file), "--known-hosts", str(registry_host.known_hosts),
            "--remote-command", str(MODELYARD_BIN), "--node", "edge1", "--require-stage", "any", "--json",
        )  # fmt: skip

    # A damaged copy of the weights' blob left where the fetch keeps partial blobs, with the store
    # blob's size and mtime: rsync takes it as complete, only the digest on the node can tell.
    weights_sha = files["model.safetensors"]["sha256"]
    blob = Path(described["blob_root"]) / weights_sha[:2] / weights_sha
    seeded = models / ".modelyard" / MODEL / ".blobs" / weights_sha[:2] / weights_sha
    seeded.parent.mkdir(parents=True)
    shutil.copyfile(blob, seeded)
    _flip_byte(seeded, 1000)
    os.utime(seeded, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns))

    damaged = pull()

    assert damaged.returncode == 1, damaged.stderr
    report = damaged.json()
    assert report["status"] == "failed"
    assert report["reason"].startswith("verification failed: sha256: SHA-256 differs: model.safetensors")
    assert report["reported"] is True
    assert not os.path.lexists(models / MODEL)
    assert _version_dirs_at(models, MODEL) == set()  # nothing left outside staging
    (row,) = registry.deployments(node="edge1")
    assert row.status == "failed" and "SHA-256 differs: model.safetensors" in row.reason

    fixed = pull()

    _ok_cli(fixed)
    report = fixed.json()
    assert report["status"] == "activated" and report["reported"] is True
    assert report["fetched_files"] == 1  # only the file that failed; the others stayed verified in staging
    assert os.readlink(models / MODEL) == f".modelyard/{MODEL}/{version_dir}"
    assert _node_files(models / MODEL) == {path: entry["sha256"] for path, entry in files.items()}
    assert not (models / ".modelyard" / MODEL / ".blobs" / weights_sha[:2] / weights_sha).exists()
    (row,) = registry.deployments(node="edge1")
    assert (row.status, row.ref, row.version_dir) == ("activated", ref, version_dir)
    assert row.serving_path == str(models / MODEL)


def _version_dirs_at(root: Path, target: str) -> set[str]:
    base = root / ".modelyard" / target
    return {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "records"}


# -- 6. a node cut off mid-transfer (a real network cut), then resumed ---------------------------------


def _shape(interface: str, rate: str | None) -> None:
    """Limit what this machine sends into a netns node's veth (the cut must land mid-file), or lift it."""
    argv = [
        "tc",
        "qdisc",
        "replace",
        "dev",
        interface,
        "root",
        "tbf",
        "rate",
        rate,
        "burst",
        "256kb",
        "latency",
        "200ms",
    ]
    if rate is None:
        argv = ["tc", "qdisc", "del", "dev", interface, "root"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0 and rate is not None:
        pytest.skip(f"cannot shape {interface} with tc: {done.stderr.strip()}")


def _tx_bytes(interface: str) -> int:
    return int(Path(f"/sys/class/net/{interface}/statistics/tx_bytes").read_text())


def _staged_bytes(directory: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    return 0


@pytest.mark.slow
def test_a_node_cut_off_mid_transfer_fails_alone_and_a_retry_resumes_its_partial_file(
    registry: Registry, netns_ssh_nodes: SshNodeFactory, tmp_path: Path
) -> None:
    nodes = netns_ssh_nodes(3)
    cut = nodes[0]
    assert isinstance(cut, NetnsSshNode)
    fleet_file = _write_fleet(tmp_path / "fleet.yaml", [n.fleet_entry() for n in nodes])
    ref = _register(registry, _model_dir(tmp_path / "run", mib=60), MODEL)
    plan = _plan(registry, fleet_file, f"{ref}={','.join(n.name for n in nodes)}")
    item = plan.artifacts[0]
    weights_size = next(f.size for f in item.files if f.path == "model.safetensors")
    staging = _target_dir(cut, MODEL) / ".staging" / item.version_dir
    _shape(cut.host_interface, "200mbit")  # 60 MiB take about 2.5 s to this node
    seen = {"at_cut": 0, "serving_appeared": False}
    done = threading.Event()

    def cut_mid_transfer() -> None:
        while not done.is_set():
            seen["serving_appeared"] |= os.path.lexists(_serving(cut, MODEL))
            if not seen["at_cut"] and _staged_bytes(staging) >= 15 * MIB:
                cut.cut()
                seen["at_cut"] = _staged_bytes(staging)
            time.sleep(0.02)

    watcher = threading.Thread(target=cut_mid_transfer)
    watcher.start()
    try:
        report = _push(registry, plan, parallel=3)
    finally:
        done.set()
        watcher.join()

    outcomes = _by_node(report)
    assert 15 * MIB <= seen["at_cut"] < weights_size, seen  # the cut came in the middle of the weights
    assert [outcomes[n.name].status for n in nodes[1:]] == ["activated", "activated"]
    assert all(_served_version(n, MODEL) == item.version_dir for n in nodes[1:])
    assert outcomes[cut.name].status == "failed"
    assert outcomes[cut.name].reason.startswith("transfer failed: rsync exited"), outcomes[cut.name].reason
    assert outcomes[cut.name].reason.endswith("(a retry resumes)")
    assert _row(registry, cut.name, item.version_dir).status == "failed"
    assert not seen["serving_appeared"] and not os.path.lexists(_serving(cut, MODEL))

    cut.reconnect()
    _shape(cut.host_interface, None)
    # The node's end of the cut-off session ends when it hears of the closed connection (or its
    # rsync times out); only then does rsync --partial leave the partial file under its name.
    assert cut.wait_idle(timeout=90), cut.processes()
    partial_size = (staging / "model.safetensors").stat().st_size
    assert seen["at_cut"] <= partial_size < weights_size
    sent_before = _tx_bytes(cut.host_interface)

    (retried,) = _push(registry, plan, nodes=[cut.name]).outcomes

    sent = _tx_bytes(cut.host_interface) - sent_before
    assert retried.status == "activated", retried.reason
    assert _served_version(cut, MODEL) == item.version_dir
    assert _node_files(_serving(cut, MODEL)) == _planned(plan, ref)
    # What went over the link: the rest of the file (and a little for ssh), not the whole 60 MiB again.
    assert sent < weights_size - partial_size + 4 * MIB, (sent, partial_size)
