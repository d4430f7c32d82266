"""The lifecycle, fleet and admin API over real HTTP, as a team drives it: validate and promote
(gates, approvals, force), aliases, the audit log, the fleet and its deployments (plan, push to a
local node, the status matrix, what a pulling node describes and records), and keys.

Who may call which route is `test_server_permissions.py`'s table; here each flow runs with the
role that may run it and checks what it did: the stored report, the new version, who the audit
log and the approvals name (the key's owner), and that a refusal stored nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from conftest import RunBuilder
from modelyard.digest import training_config_hash
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry
from serverproc import ServerProcess, free_port

API = "/api/v1"
CONFIG = {"batch_size": 256, "epochs": 10}
# Every field the default policy's manifest_complete gate reads.
COMPLETE = {
    "base_model": "vit-base16",
    "task": "embed",
    "precision": "fp16",
    "training_config_hash": training_config_hash(CONFIG),
    "training_config": CONFIG,
}
# The same run without its training_config_hash: the manifest_complete gate fails.
INCOMPLETE = {"base_model": "vit-base16", "task": "embed"}
KEY_NAMES = {"viewer": "vic", "trainer": "tess", "deployer": "dan", "approver": "abe", "admin": "ada"}


@dataclass
class Team:
    """One server, one key per role (owners named in KEY_NAMES), and a place for runs."""

    server: ServerProcess
    keys: dict[str, str]
    runs: Path

    def url(self, path: str) -> str:
        return self.server.url + API + path

    def call(self, role: str, method: str, path: str, **request: Any) -> httpx.Response:
        return httpx.request(method, self.url(path), headers=self.server.auth(self.keys[role]), timeout=120, **request)

    def ok(self, role: str, method: str, path: str, status: int = 200, **request: Any) -> Any:
        response = self.call(role, method, path, **request)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def refused(self, role: str, method: str, path: str, status: int, **request: Any) -> dict[str, Any]:
        """The error body of a refusal with this status."""
        response = self.call(role, method, path, **request)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        error: dict[str, Any] = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
        return error

    def register(self, name: str, manifest: dict[str, Any], seed: int = 0) -> str:
        """A run with real safetensors checkpoints, registered through the Python API on the
        server's home (as a training job would); returns its ref."""
        run = RunBuilder(self.runs / name)(f"run_{seed}", seed=seed, manifest={"artifact_name": name, **manifest})
        with Registry.open(self.server.home) as registry:
            return registry.register(run, RegisterOptions()).version.ref

    def versions(self, name: str) -> list[int]:
        return sorted(v["number"] for v in self.ok("viewer", "GET", f"/artifacts/{name}")["versions"])

    def events(self, target: str, **params: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.ok("viewer", "GET", "/audit", params={"artifact": target, **params})
        return events


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("team")
    server = ServerProcess(home=root / "home", port=free_port())
    server.home.mkdir()
    server.start()
    try:
        yield Team(server, {role: server.key(role, name=name) for role, name in KEY_NAMES.items()}, root / "runs")
    finally:
        server.stop()


def _path(ref: str, action: str = "") -> str:
    name, _, number = ref.partition("@")
    return f"/artifacts/{name}/versions/{number}" + (f"/{action}" if action else "")


def _validated(team: Team, name: str) -> dict[str, Any]:
    """A complete run, validated by the trainer."""
    raw = team.register(name, COMPLETE)
    promoted: dict[str, Any] = team.ok("trainer", "POST", _path(raw, "promote"), 201, json={"to": "validated"})
    return promoted


# == validation and promotion to validated ===========================================================


def test_a_trainer_validates_and_promotes_a_version_whose_gates_all_pass(team: Team) -> None:
    name = "vision-gates-embed-v1"
    raw = team.register(name, COMPLETE)

    report = team.ok("trainer", "POST", _path(raw, "validate"), 201, json={"checkpoint": "best"})
    assert (report["version"], report["checkpoint"], report["passed"], report["actor"]) == (raw, "best", True, "tess")
    checks = {check["name"]: check["passed"] for check in report["report"]["checks"]}
    assert checks == {"files_present": True, "readable": True, "pickles": True, "manifest_complete": True}
    assert team.ok("viewer", "GET", _path(raw, "reports")) == [report]

    validated = team.ok("trainer", "POST", _path(raw, "promote"), 201, json={"to": "validated", "checkpoint": "best"})
    assert (validated["stage"], validated["forced"], validated["number"]) == ("validated", False, 2)
    assert validated["manifest"]["derived_from"] == raw and validated["manifest"]["checkpoint"] == "best"
    assert team.ok("viewer", "GET", f"/artifacts/{name}/versions/validated")["ref"] == validated["ref"]
    promotion = team.events(validated["ref"])
    assert {(e["actor"], e["version_number"]) for e in promotion} == {("tess", 2)}


def test_a_failing_gate_refuses_the_promotion_naming_the_gate_and_stores_no_version(team: Team) -> None:
    name = "vision-failing-embed-v1"
    raw = team.register(name, INCOMPLETE)
    report = team.ok("trainer", "POST", _path(raw, "validate"), 201, json={})
    failed = [c for c in report["report"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["manifest_complete"] and "training_config_hash" in failed[0]["detail"]

    refused = team.refused("trainer", "POST", _path(raw, "promote"), 409, json={"to": "validated"})
    assert refused["code"] == "gate_failed"
    assert f"{raw} did not pass its gates: manifest_complete" in refused["message"]
    assert "training_config_hash" in refused["message"]
    stored = team.ok("viewer", "GET", _path(raw, "reports"))
    assert refused["details"]["report"] == stored[-1]["id"] and stored[-1]["passed"] is False
    assert team.versions(name) == [1]  # no validated version


def test_force_past_failed_gates_needs_an_admin_and_a_reason_and_is_audited(team: Team) -> None:
    name = "vision-forced-embed-v1"
    raw = team.register(name, INCOMPLETE)
    promote = _path(raw, "promote")

    for role, needed in (("trainer", "'force'"), ("approver", "'promote.validated'")):
        refused = team.refused(role, "POST", promote, 403, json={"to": "validated", "force": True, "reason": "r"})
        assert needed in refused["message"] and KEY_NAMES[role] in refused["message"]
    no_reason = team.refused("admin", "POST", promote, 422, json={"to": "validated", "force": True})
    assert no_reason["details"]["field"] == "reason" and "--force needs --reason" in no_reason["message"]
    blank = team.refused("admin", "POST", promote, 422, json={"to": "validated", "force": True, "reason": "  "})
    assert blank["details"]["field"] == "reason"
    assert team.versions(name) == [1]

    why = "the hash is recomputed by the next training job"
    forced = team.ok("admin", "POST", promote, 201, json={"to": "validated", "force": True, "reason": why})
    assert (forced["stage"], forced["forced"]) == ("validated", True)
    force = next(e for e in team.events(raw) if e["action"] == "force")
    assert force["actor"] == "ada" and force["details"]["reason"] == why
    assert force["details"]["failed_checks"] == ["manifest_complete"]

    # Production from a forced version needs two distinct approvers.
    production = _path(forced["ref"], "promote")
    one = team.refused("approver", "POST", production, 409, json={"to": "production", "version": "1.0.0"})
    assert "second, distinct approver" in one["message"] and "abe" in one["message"]
    team.ok("admin", "POST", _path(forced["ref"], "approve"), 201, json={"note": "checked the weights by hand"})
    shipped = team.ok("approver", "POST", production, 201, json={"to": "production", "version": "1.0.0"})
    assert shipped["stage"] == "production" and shipped["semantic_version"] == "1.0.0"
    approvers = [a["approved_by"] for a in team.ok("viewer", "GET", _path(forced["ref"], "approvals"))]
    assert approvers == ["abe", "ada"]


def test_a_promotion_refuses_the_fields_of_the_other_stage(team: Team) -> None:
    name = "vision-fields-embed-v1"
    raw = team.register(name, COMPLETE)
    promote = _path(raw, "promote")
    for body, field in (
        ({"to": "validated", "version": "1.0.0"}, "version"),
        ({"to": "validated", "deployment_config": {"replicas": 2}}, "deployment_config"),
    ):
        refused = team.refused("trainer", "POST", promote, 422, json=body)
        assert refused["details"]["field"] == field and "applies to promotions to production" in refused["message"]
    validated = team.ok("trainer", "POST", promote, 201, json={"to": "validated"})
    for body, field in (
        ({"to": "production", "version": "1.0.0", "force": True}, "force"),
        ({"to": "production", "version": "1.0.0", "checkpoint": "best"}, "checkpoint"),
    ):
        refused = team.refused("admin", "POST", _path(validated["ref"], "promote"), 422, json=body)
        assert refused["details"]["field"] == field and "applies to promotions to validated" in refused["message"]
    unknown = team.refused("trainer", "POST", promote, 422, json={"to": "validated", "approved_by": "someone"})
    assert unknown["details"]["field"] == "approved_by"  # no request names its approver
    assert team.versions(name) == [1, 2]


# == production: approvals record the key's owner =======================================================


def test_production_needs_an_approver_and_records_the_approving_keys_owner(team: Team) -> None:
    name = "vision-release-embed-v1"
    validated = _validated(team, name)
    promote = _path(validated["ref"], "promote")
    body = {"to": "production", "version": "1.0.0", "deployment_config": {"replicas": 2}}

    assert team.refused("trainer", "POST", promote, 403, json=body)["code"] == "forbidden"
    missing_version = team.refused("approver", "POST", promote, 422, json={"to": "production"})
    assert missing_version["details"]["field"] == "version"
    bad_version = team.refused("approver", "POST", promote, 422, json={"to": "production", "version": "v1"})
    assert "v1" in bad_version["message"]
    assert team.versions(name) == [1, 2]

    production = team.ok("approver", "POST", promote, 201, json=body)
    assert (production["stage"], production["semantic_version"]) == ("production", "1.0.0")
    (approval,) = team.ok("viewer", "GET", _path(validated["ref"], "approvals"))
    assert (approval["approved_by"], approval["os_user"]) == ("abe", "abe")
    metadata = httpx.get(
        team.url(_path(production["ref"], "files/metadata.json")), headers=team.server.auth(team.keys["viewer"])
    ).json()
    assert metadata["approved_by"] == ["abe"] and metadata["promoted_by"] == "abe"
    assert metadata["deployment"]["files"]
    promoted = [e for e in team.events(production["ref"]) if e["version_number"] == production["number"]]
    assert promoted and {e["actor"] for e in promoted} == {"abe"}, team.events(production["ref"])
    assert team.ok("viewer", "GET", f"/artifacts/{name}/versions/production")["ref"] == production["ref"]

    reused = team.refused("approver", "POST", promote, 409, json={"to": "production", "version": "1.0.0"})
    assert "1.0.0 already exists" in reused["message"]


def test_approvals_are_for_validated_versions_and_name_the_key_not_the_body(team: Team) -> None:
    name = "vision-approve-embed-v1"
    raw = team.register(name, COMPLETE)
    on_raw = team.refused("approver", "POST", _path(raw, "approve"), 422, json={})
    assert "approvals are for validated versions" in on_raw["message"]
    named = team.refused("approver", "POST", _path(raw, "approve"), 422, json={"approved_by": "mallory"})
    assert named["details"]["field"] == "approved_by"
    validated = team.ok("trainer", "POST", _path(raw, "promote"), 201, json={"to": "validated"})
    assert team.refused("trainer", "POST", _path(validated["ref"], "approve"), 403, json={})["code"] == "forbidden"
    approvals = team.ok("approver", "POST", _path(validated["ref"], "approve"), 201, json={"note": "looks right"})
    assert [(a["approved_by"], a["note"]) for a in approvals] == [("abe", "looks right")]
    approve = next(e for e in team.events(validated["ref"]) if e["action"].startswith("approv"))
    assert approve["actor"] == "abe"


# == aliases ==================================================================================================


def test_aliases_move_only_for_approvers_and_admins_and_each_move_is_audited(team: Team) -> None:
    name = "vision-alias-embed-v1"
    first = team.register(name, COMPLETE, seed=0)
    second = team.register(name, COMPLETE, seed=3)
    champion = f"/artifacts/{name}/aliases/champion"

    for role in ("viewer", "trainer", "deployer"):
        refused = team.refused(role, "PUT", champion, 403, json={"version": "1"})
        assert "'alias'" in refused["message"]
    assert team.ok("viewer", "GET", f"/artifacts/{name}/aliases") == []

    made = team.ok("approver", "PUT", champion, json={"version": "1", "reason": "first good run"})
    assert (made["alias"], made["ref"], made["set_by"], made["previous"]) == ("champion", first, "abe", None)
    moved = team.ok("admin", "PUT", champion, json={"version": "2", "reason": "better recall"})
    assert (moved["ref"], moved["set_by"], moved["previous"]) == (second, "ada", first)
    team.ok("approver", "PUT", f"/artifacts/{name}/aliases/canary", json={"version": "1"})
    listed = {a["alias"]: (a["ref"], a["set_by"]) for a in team.ok("viewer", "GET", f"/artifacts/{name}/aliases")}
    assert listed == {"champion": (second, "ada"), "canary": (first, "abe")}
    assert team.ok("viewer", "GET", f"/artifacts/{name}/versions/champion")["ref"] == second

    # Reserved references move only by registration or promotion; bad input stores nothing.
    for reserved in ("production", "validated", "latest"):
        error = team.refused("admin", "PUT", f"/artifacts/{name}/aliases/{reserved}", 422, json={"version": "1"})
        assert error["details"]["field"] == "alias" and "is reserved" in error["message"]
    bad = team.refused("admin", "PUT", f"/artifacts/{name}/aliases/Champion", 422, json={"version": "1"})
    assert "must start with a lowercase letter" in bad["message"]
    qualified = team.refused("admin", "PUT", champion, 422, json={"version": f"{name}@1"})
    assert qualified["details"]["field"] == "version" and "not NAME@REF" in qualified["message"]
    assert "9" in team.refused("admin", "PUT", champion, 404, json={"version": "9"})["message"]
    assert team.refused("admin", "PUT", champion, 422, json={"version": "1", "set_by": "x"})["details"]["field"] == (
        "set_by"
    )
    assert {a["alias"]: a["ref"] for a in team.ok("viewer", "GET", f"/artifacts/{name}/aliases")} == {
        "champion": second,
        "canary": first,
    }

    assert team.refused("trainer", "DELETE", champion, 403)["code"] == "forbidden"
    removed = team.ok("approver", "DELETE", champion, params={"reason": "retired"})
    assert removed == {"alias": "champion", "ref": second}
    assert team.refused("approver", "DELETE", champion, 404)["code"] == "not_found"
    assert team.refused("viewer", "GET", f"/artifacts/{name}/versions/champion", 404)["code"] == "not_found"

    moves = [(e["action"], e["actor"], e["details"].get("reason")) for e in reversed(team.events(name))]
    assert [m for m in moves if m[0].startswith("alias:")] == [
        ("alias:set", "abe", "first good run"),
        ("alias:move", "ada", "better recall"),
        ("alias:set", "abe", None),
        ("alias:remove", "abe", "retired"),
    ]


# == the audit log ===============================================================================================


def test_the_audit_log_lists_all_one_artifact_or_one_version_newest_first_in_pages(team: Team) -> None:
    name = "vision-audit-embed-v1"
    raw = team.register(name, COMPLETE)
    validated = team.ok("trainer", "POST", _path(raw, "promote"), 201, json={"to": "validated"})
    team.ok("approver", "PUT", f"/artifacts/{name}/aliases/champion", json={"version": "2"})

    everything = team.ok("viewer", "GET", "/audit", params={"limit": 1000})
    assert {e["artifact_name"] for e in everything} >= {name}
    mine = team.events(name)
    assert mine == [e for e in everything if e["artifact_name"] == name]
    assert [e["at"] for e in mine] == sorted((e["at"] for e in mine), reverse=True)
    assert mine[0]["action"] == "alias:set"
    assert {e["version_number"] for e in team.events(validated["ref"])} == {2}
    assert {e["version_number"] for e in team.events(raw)} == {1}

    pages = [team.events(name, limit=2, offset=offset) for offset in range(0, len(mine) + 2, 2)]
    assert [e for page in pages for e in page] == mine and pages[-1] == []
    assert len(pages[0]) == 2

    params: dict[str, Any]
    for params, field in (
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"offset": -1}, "query.offset"),
    ):
        assert team.refused("viewer", "GET", "/audit", 422, params=params)["details"]["field"] == field
    assert "nope-v1" in team.refused("viewer", "GET", "/audit", 404, params={"artifact": "nope-v1"})["message"]
    assert team.refused("viewer", "GET", "/audit", 404, params={"artifact": f"{name}@9"})["code"] == "not_found"


# == the fleet and its deployments ============================================================================


def _fleet_document(root: Path) -> dict[str, Any]:
    """Two local nodes: edge1 and edge2 (their models roots under `root`)."""
    return {
        "nodes": [
            {"name": name, "host": "local", "node_type": "encoder", "models_root": str(root / name), "labels": labels}
            for name, labels in (("edge1", {"site": "lab"}), ("edge2", {"site": "field"}))
        ]
    }


def _write_fleet(home: Path, document: dict[str, Any]) -> None:
    writer = YAML(typ="safe", pure=True)
    writer.default_flow_style = False
    with (home / "fleet.yaml").open("w", encoding="utf-8") as handle:
        writer.dump(document, handle)


@pytest.fixture(scope="module")
def fleet_team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """A server of its own: the fleet file appears during its test."""
    root = tmp_path_factory.mktemp("fleet")
    server = ServerProcess(home=root / "home", port=free_port())
    server.home.mkdir()
    server.start()
    try:
        yield Team(server, {role: server.key(role, name=name) for role, name in KEY_NAMES.items()}, root / "runs")
    finally:
        server.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plan_push_to_a_local_node_and_the_status_matrix_follows(fleet_team: Team, tmp_path: Path) -> None:
    team = fleet_team
    name = "vision-fleet-embed-v1"
    validated = _validated(team, name)
    production = team.ok(
        "approver", "POST", _path(validated["ref"], "promote"), 201, json={"to": "production", "version": "1.0.0"}
    )

    no_fleet = team.refused("viewer", "GET", "/fleet", 404)
    assert "fleet.yaml" in no_fleet["message"]
    nodes_root = tmp_path / "nodes"
    _write_fleet(team.server.home, _fleet_document(nodes_root))
    fleet = team.ok("viewer", "GET", "/fleet")
    assert [(n["name"], n["host"], n["models_root"]) for n in fleet["nodes"]] == [
        ("edge1", "local", str(nodes_root / "edge1")),
        ("edge2", "local", str(nodes_root / "edge2")),
    ]
    empty = team.ok("viewer", "GET", "/deployments")
    assert empty["deployments"] == []

    # Plans: refusals name the field and plan nothing.
    unknown_node = team.refused(
        "deployer", "POST", "/deployments/plan", 404, json={"assignments": [f"{name}@1.0.0=edge9"]}
    )
    assert unknown_node["message"] == "the fleet has no node 'edge9'; its nodes: edge1, edge2"
    raw_stage = team.refused("deployer", "POST", "/deployments/plan", 422, json={"assignments": [f"{name}@1=edge1"]})
    assert raw_stage["details"]["field"] == "require_stage" and "a raw version" in raw_stage["message"]
    malformed = team.refused("deployer", "POST", "/deployments/plan", 422, json={"assignments": ["no-equals-sign"]})
    assert malformed["details"]["field"] == "assignments[0]"
    assert team.refused("deployer", "POST", "/deployments/plan", 422, json={"assignments": []})["details"]["field"] == (
        "assignments"
    )

    plan = team.ok(
        "deployer",
        "POST",
        "/deployments/plan",
        json={"assignments": [{"artifact": f"{name}@production", "targets": ["label:site=lab"]}]},
    )
    (item,) = plan["artifacts"]
    assert item["ref"] == production["ref"] and [n["node"] for n in item["nodes"]] == ["edge1"]
    assert not nodes_root.exists()  # planning touches no node

    # A plan sent back is held to the registry's fleet and files.
    moved = json.loads(json.dumps(plan))
    moved["fleet"]["nodes"][0]["models_root"] = str(tmp_path / "elsewhere")
    elsewhere = team.refused("deployer", "POST", "/deployments/push", 422, json={"plan": moved})
    assert elsewhere["details"]["field"].startswith("plan.artifacts[") and "elsewhere" in elsewhere["message"]
    commanded = json.loads(json.dumps(plan))
    commanded["fleet"]["nodes"][0]["activate"] = "touch /tmp/owned"
    tampered = team.refused("deployer", "POST", "/deployments/push", 409, json={"plan": commanded})
    assert tampered["details"]["field"] == "plan.fleet" and "node edge1 is not in this registry" in tampered["message"]
    assert team.refused("viewer", "POST", "/deployments/push", 403, json={"plan": plan})["code"] == "forbidden"
    assert not nodes_root.exists()

    pushed = team.ok("deployer", "POST", "/deployments/push", json={"plan": plan})
    assert pushed["ok"] is True
    (outcome,) = pushed["outcomes"]
    assert (outcome["node"], outcome["status"]) == ("edge1", "activated")
    serving = nodes_root / "edge1" / item["target_name"]
    assert os.readlink(serving) == f".modelyard/{item['target_name']}/{item['version_dir']}"
    for planned in item["files"]:
        assert _sha256(serving / planned["path"]) == planned["sha256"]
    assert not (nodes_root / "edge2").exists()

    status = team.ok("viewer", "GET", "/deployments")
    assert status["nodes"] == ["edge1"]
    (column,) = status["artifacts"]
    cell = column["cells"]["edge1"]
    assert (column["target_name"], cell["status"], cell["serving"]) == (
        item["target_name"],
        "activated",
        production["ref"],
    )
    (row,) = status["deployments"]
    assert (row["node"], row["status"], row["ref"], row["updated_by"]) == (
        "edge1",
        "activated",
        production["ref"],
        "dan",
    )
    assert team.ok("viewer", "GET", "/deployments", params={"node": "edge2"})["deployments"] == []
    assert len(team.ok("viewer", "GET", "/deployments", params={"name": name})["deployments"]) == 1

    again = team.ok("deployer", "POST", "/deployments/push", json={"plan": plan})
    assert again["outcomes"][0]["up_to_date"] is True


def test_describe_and_record_are_what_a_pulling_node_uses(fleet_team: Team) -> None:
    team = fleet_team
    name = "vision-pulled-embed-v1"
    raw = team.register(name, COMPLETE)

    described = team.ok("viewer", "GET", _path(raw, "describe"), params={"require_stage": "any"})
    assert set(described) == {"artifact", "manifest"}  # nothing of the server's filesystem
    item = described["artifact"]
    assert item["ref"] == raw and item["files"]
    assert json.loads(described["manifest"])["artifact_name"] == name
    refused = team.refused("viewer", "GET", _path(raw, "describe"), 422)  # default: production only
    assert refused["details"]["field"] == "require_stage" and "a raw version" in refused["message"]
    gold = team.refused("viewer", "GET", _path(raw, "describe"), 422, params={"require_stage": "gold"})
    assert "unknown stage 'gold'" in gold["message"]
    absent = team.refused(
        "viewer", "GET", f"/artifacts/{name}/versions/9/describe", 404, params={"require_stage": "any"}
    )
    assert absent["code"] == "not_found"

    record = {
        "node": "edge7",
        "target_name": name,
        "version_dir": item["version_dir"],
        "artifact_name": name,
        "version_number": item["number"],
        "serving_path": f"/srv/models/{name}",
        "status": "activated",
        "reason": "pulled by the node",
        "checks": {"sha256": {"status": "passed"}},
        "files": item["files"],
    }
    for change, field, needle in (
        ({"status": "great"}, "status", "unknown status 'great'"),
        ({"target_name": "../escape"}, "target_name", "../escape"),
        ({"version_number": 0}, "version_number", "greater than or equal to 1"),
        ({"node": ""}, "node", "at least 1 character"),
        ({"extra": 1}, "extra", "not permitted"),
    ):
        error = team.refused("deployer", "POST", "/deployments/record", 422, json={**record, **change})
        assert error["details"]["field"] == field and needle in error["message"], error
    unknown = team.refused("deployer", "POST", "/deployments/record", 404, json={**record, "version_number": 9})
    assert unknown["code"] == "not_found" and name in unknown["message"]
    assert team.ok("viewer", "GET", "/deployments", params={"node": "edge7"})["deployments"] == []

    recorded = team.ok("deployer", "POST", "/deployments/record", json=record)
    assert (recorded["node"], recorded["status"], recorded["version_dir"]) == (
        "edge7",
        "activated",
        item["version_dir"],
    )
    (row,) = team.ok("viewer", "GET", "/deployments", params={"node": "edge7"})["deployments"]
    assert (row["status"], row["updated_by"]) == ("activated", "dan (pull from edge7)")
    matrix = team.ok("viewer", "GET", "/deployments", params={"name": name})
    assert matrix["nodes"] == ["edge7"] and matrix["artifacts"][0]["cells"]["edge7"]["serving"] == raw


# == keys ==========================================================================================================


def test_a_key_an_admin_creates_acts_with_its_role_until_it_is_revoked(team: Team) -> None:
    name = "vision-keys-embed-v1"
    raw = team.register(name, COMPLETE)
    created = team.ok("admin", "POST", "/keys", 201, json={"name": "nightly-ci", "role": "trainer"})
    secret = created["key"]
    assert created["created_by"] == "ada" and created["active"] is True and created["prefix"] == secret[:8]
    listed = team.call("admin", "GET", "/keys")
    assert secret not in listed.text and all("key" not in k for k in listed.json())

    headers = team.server.auth(secret)
    report = httpx.post(team.url(_path(raw, "validate")), json={}, headers=headers)
    assert report.status_code == 201 and report.json()["actor"] == "nightly-ci"
    alias = httpx.put(team.url(f"/artifacts/{name}/aliases/champion"), json={"version": "1"}, headers=headers)
    assert alias.status_code == 403 and "nightly-ci (trainer)" in alias.json()["error"]["message"]

    revoked = team.ok("admin", "DELETE", "/keys/nightly-ci")
    assert (revoked["active"], revoked["revoked_by"]) == (False, "ada") and revoked["revoked_at"]
    refused = httpx.post(team.url(_path(raw, "validate")), json={}, headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "unknown or revoked API key"
    assert len(team.ok("viewer", "GET", _path(raw, "reports"))) == 1  # the refused call stored nothing
    assert team.ok("admin", "DELETE", "/keys/nightly-ci") == revoked  # once revoked, it stays as it was
    revocations = [e for e in team.ok("viewer", "GET", "/audit") if e["action"] == "key.revoke"]
    assert [(e["actor"], e["details"]) for e in revocations] == [("ada", {"name": "nightly-ci", "role": "trainer"})]
