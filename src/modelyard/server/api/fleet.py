"""Fleet distribution over HTTP (seed 004): the fleet, plans, pushes, status, rollback, drift, and
the two calls a node that pulls over HTTP makes (describe a version, record its outcome).

The fleet is always the registry's own `<home>/fleet.yaml`, which only an admin writes: a request
never supplies nodes. A plan sent back for a push is held to that fleet (every node it names must
be there with the same settings, so no request brings its own `activate`, `health` or host) and
to the registry (its files must be the version's), then pushed with the registry's fleet. Node
failures are results (`ok: false` with each reason), not HTTP errors; a push runs synchronously.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from modelyard.access import Principal
from modelyard.distribute.fleet import FLEET_FILENAME, Fleet
from modelyard.distribute.plan import Assignment, DistributionPlan
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.names import MANIFEST_FILENAME
from modelyard.registry import Registry
from modelyard.server.security import RegistryDep, require

router = APIRouter(prefix="/api/v1", tags=["fleet"])
Reader = Annotated[Principal, Depends(require("read"))]
Deployer = Annotated[Principal, Depends(require("deploy"))]

NAME = 300  # the longest name, reference or target list accepted
MAX_ASSIGNMENTS = 1000
# The planning code's errors name the CLI's options; a request names its fields instead.
REQUEST_FIELDS: Final = {"--require-stage": "require_stage", "assignment": "assignments"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AssignmentIn(_Body):
    """One assignment as an object: what an assignments file entry holds."""

    artifact: str = Field(max_length=NAME, description="NAME@REF")
    targets: str | list[str] = Field(description="node names, type:NODE_TYPE, label:KEY=VALUE")
    target_name: str | None = Field(None, max_length=NAME, description="the serving directory (default: the name)")
    base: str | None = Field(None, max_length=NAME, description="NAME@REF of the adapter's registered base model")


class PlanIn(_Body):
    assignments: list[Annotated[str, Field(max_length=NAME * 4)] | AssignmentIn] = Field(
        min_length=1, max_length=MAX_ASSIGNMENTS, description='"NAME@REF=TARGETS" strings or objects'
    )
    require_stage: str = Field("production", max_length=20, description="raw, validated, production or any")
    all_files: bool = False


class PushIn(_Body):
    plan: dict[str, Any] = Field(description="a plan as POST /deployments/plan returned it")
    parallel: int = Field(4, ge=1, le=64, description="nodes served at the same time")
    canary: int = Field(0, ge=0, description="push to the first N nodes; the rest only if they are healthy")
    repair: bool = Field(False, description="re-hash copies on the nodes; fetch only damaged blocks")
    nodes: list[Annotated[str, Field(max_length=NAME)]] | None = Field(None, description="only these nodes")
    keep: int | None = Field(None, ge=1, le=100, description="verified versions kept per node")
    compress: bool = False


class RollbackIn(_Body):
    name: str = Field(max_length=NAME, description="the artifact or serving target name")
    node: str = Field(max_length=NAME)


class VerifyIn(_Body):
    nodes: list[Annotated[str, Field(max_length=NAME)]] | None = None
    name: str | None = Field(None, max_length=NAME)


class RecordIn(_Body):
    """A pulling node's report of its outcome (what `modelyard pull` sends)."""

    node: str = Field(min_length=1, max_length=NAME)
    target_name: str = Field(max_length=NAME)
    version_dir: str = Field(max_length=NAME)
    artifact_name: str = Field(max_length=NAME)
    version_number: int = Field(ge=1)
    serving_path: str = Field(max_length=4096)
    status: str = Field(max_length=20)
    reason: str = Field("", max_length=4000)
    checks: dict[str, JsonValue] | None = None
    files: list[dict[str, JsonValue]] | None = None


@contextmanager
def request_fields() -> Iterator[None]:
    """Re-raise the planning code's refusals naming the request's field, not the CLI option."""
    try:
        yield
    except InvalidInputError as exc:
        if exc.field in REQUEST_FIELDS:
            raise InvalidInputError(
                exc.message, path=exc.path, field=REQUEST_FIELDS[exc.field], details=exc.details
            ) from None
        raise


def server_fleet(registry: Registry) -> Fleet:
    """The registry's fleet file; 404 when it has none."""
    if not (registry.settings.home / FLEET_FILENAME).is_file():
        raise NotFoundError(
            f"this registry has no fleet: an admin writes {FLEET_FILENAME} in its home (see docs/distribution.md)"
        )
    return registry.fleet()


# -- the fleet ------------------------------------------------------------------------------------------


@router.get("/fleet", summary="The fleet's nodes, as the registry's fleet file describes them")
def show_fleet(registry: RegistryDep, principal: Reader) -> dict[str, Any]:
    with registry.acting_as(principal):
        fleet = server_fleet(registry)
    return {"nodes": [node.model_dump(mode="json") for node in fleet.nodes]}


@router.get("/fleet/check", summary="Connect to each node: reachable, free disk, tools and hasher there")
def check_fleet(
    registry: RegistryDep,
    principal: Deployer,
    node: Annotated[list[str] | None, Query(description="only this node (repeatable)")] = None,
) -> list[dict[str, Any]]:
    with registry.acting_as(principal):
        checks = registry.fleet_check(server_fleet(registry), node)
    return [check.to_dict() for check in checks]


# -- plan and push -----------------------------------------------------------------------------------


@router.post("/deployments/plan", summary="A distribution plan: which version goes to which nodes, with what files")
def plan_deployment(body: PlanIn, registry: RegistryDep, principal: Deployer) -> dict[str, Any]:
    from modelyard.distribute.plan import parse_assignment

    assignments: list[Assignment] = []
    for index, given in enumerate(body.assignments):
        where = f"assignments[{index}]"
        if isinstance(given, str):
            try:
                assignments.append(parse_assignment(given))
            except InvalidInputError as exc:
                raise InvalidInputError(exc.message, field=where) from None
        else:
            targets = given.targets if isinstance(given.targets, str) else ",".join(given.targets)
            assignments.append(Assignment(given.artifact, targets, given.target_name, given.base, source=where))
    with registry.acting_as(principal), request_fields():
        fleet = server_fleet(registry)
        plan = registry.plan_deployment(
            assignments, fleet=fleet, require_stage=body.require_stage, all_files=body.all_files
        )
    document: dict[str, Any] = plan.model_dump(mode="json")
    return document


@router.post("/deployments/push", summary="Execute a plan: transfer, verify on the node, switch, activate, health")
def push(body: PushIn, registry: RegistryDep, principal: Deployer) -> dict[str, Any]:
    from modelyard.distribute.push import PushOptions

    options = PushOptions(
        repair=body.repair,
        compress=body.compress,
        keep=body.keep,
        parallel=body.parallel,
        canary=body.canary,
        nodes=body.nodes,
    )
    with registry.acting_as(principal):
        plan = trusted_plan(registry, body.plan)
        report = registry.push(plan, options)
    return report.to_dict()


def trusted_plan(registry: Registry, document: dict[str, Any]) -> DistributionPlan:
    """A plan a request sent back, held to `deploy push`'s rules for a plan file, to this
    registry's fleet (the nodes it names, with the same settings) and to the registry (the files
    each version has); returned with the registry's fleet in it."""
    plan = _read_plan(registry, document)
    fleet = server_fleet(registry)
    for name in sorted({target.node for item in plan.artifacts for target in item.nodes}):
        known = {node.name: node for node in fleet.nodes}.get(name)
        if known is None or known != plan.fleet.node(name):
            raise ConflictError(
                f"node {name} is not in this registry's fleet as the plan has it; make the plan again",
                field="plan.fleet",
            )
    for item in plan.artifacts:
        version = registry.show(item.ref)
        stored = {(f.path, f.size, f.sha256) for f in version.manifest.files}
        foreign = [
            f.path for f in item.files if (f.path, f.size, f.sha256) not in stored and f.path != MANIFEST_FILENAME
        ]
        if (item.artifact, item.number) != (version.artifact_name, version.number) or foreign:
            raise ConflictError(
                f"the plan's {item.ref} is not the registry's ({', '.join(foreign) or 'name or number'} differ); "
                "make the plan again",
                field=f"plan.artifacts[{item.ref}]",
            )
    return plan.model_copy(update={"fleet": fleet})


def _read_plan(registry: Registry, document: dict[str, Any]) -> DistributionPlan:
    """`read_plan`'s checks (format, schema, target names, serving paths, file paths, the file
    list's digest) on a plan sent in a request."""
    from modelyard.distribute.plan import read_plan
    from modelyard.lifecycle.scratch import scratch_dir

    with scratch_dir(registry.settings.home, "deploy-") as scratch:
        path = scratch / "plan.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        try:
            return read_plan(path)
        except InvalidInputError as exc:
            raise InvalidInputError(exc.message, field=f"plan.{exc.field}" if exc.field else "plan") from None


# -- status, rollback, drift --------------------------------------------------------------------------


@router.get("/deployments", summary="The matrix of serving targets by nodes, and every deployment row")
def deployments(
    registry: RegistryDep,
    principal: Reader,
    name: Annotated[str | None, Query(max_length=NAME, description="an artifact or serving target name")] = None,
    node: Annotated[str | None, Query(max_length=NAME)] = None,
) -> dict[str, Any]:
    from modelyard.distribute.report import status_matrix

    with registry.acting_as(principal):
        rows = registry.deployments(name=name, node=node)
    return status_matrix(rows) | {"deployments": [row.to_dict() for row in rows]}


@router.post("/deployments/rollback", summary="Serve the previous verified version a node holds again")
def rollback(body: RollbackIn, registry: RegistryDep, principal: Deployer) -> dict[str, Any]:
    with registry.acting_as(principal):
        outcome = registry.rollback(body.name, body.node, server_fleet(registry))
    return {"ok": outcome.ok, **outcome.to_dict()}


@router.post("/deployments/verify", summary="Re-hash what every node serves; report drift")
def verify(body: VerifyIn, registry: RegistryDep, principal: Deployer) -> dict[str, Any]:
    with registry.acting_as(principal):
        report = registry.verify_deployments(server_fleet(registry), nodes=body.nodes, name=body.name)
    return report.to_dict()


# -- nodes that pull over HTTP -------------------------------------------------------------------------


@router.get(
    "/artifacts/{name}/versions/{ref}/describe",
    summary="What a node pulling this version fetches: the planned files and the manifest text",
)
def describe(
    name: str,
    ref: str,
    registry: RegistryDep,
    principal: Reader,
    require_stage: Annotated[str, Query(max_length=20, description="raw, validated, production or any")] = "production",
    all_files: bool = False,
) -> dict[str, Any]:
    from modelyard.distribute.plan import describe_version

    # Not `describe_for_pull`: that one also names the local blob directory for rsync, and so
    # refuses a registry whose store is remote; an HTTP pull fetches blobs from /blobs instead.
    with registry.acting_as(principal), request_fields():
        item = describe_version(registry, f"{name}@{ref}", require_stage=require_stage, all_files=all_files)
        manifest = registry.show(item.ref).manifest.to_json()
    return {"artifact": item.model_dump(mode="json"), "manifest": manifest}


@router.post("/deployments/record", summary="A pulling node's report of its outcome: it joins the status matrix")
def record(body: RecordIn, registry: RegistryDep, principal: Deployer) -> dict[str, Any]:
    with registry.acting_as(principal):
        registry.record_pull(body.model_dump())
        row = registry.catalog.deployments.find(body.node, body.target_name, body.version_dir)
    if row is None:  # record_pull writes the row or raises
        raise NotFoundError(f"no deployment of {body.target_name} on {body.node}")
    recorded: dict[str, Any] = row.to_dict()
    return recorded
