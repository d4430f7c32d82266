"""The lifecycle over HTTP (seed 003): validate, promote, approve, aliases, status, audit, prune.

Each endpoint calls one Registry method acting for the key's owner, so the audit log names who
did it and an approval records the approving key's owner (a request cannot name anyone else:
unknown body fields are refused). A promotion's permission depends on its target stage:
`promote.validated` or `promote.production`, and `force` (admins) to pass failed gates. Policies
are not accepted over HTTP (a policy runs commands): validation uses the default policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from modelyard.access import Principal
from modelyard.errors import InvalidInputError
from modelyard.server.api.artifacts import VersionOut, version_out
from modelyard.server.security import RegistryDep, authenticate, check_permission, refusal, require

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])
Reader = Annotated[Principal, Depends(require("read"))]
Validator = Annotated[Principal, Depends(require("validate"))]
Approver = Annotated[Principal, Depends(require("approve"))]
AliasMover = Annotated[Principal, Depends(require("alias"))]
StatusChanger = Annotated[Principal, Depends(require("status"))]
Pruner = Annotated[Principal, Depends(require("prune"))]

TEXT = 2000  # the longest reason, note or name accepted
MAX_EVENTS = 1000
MAX_AUDIT_OFFSET = 100_000  # bounds the events read for one page
PROMOTE_PERMISSIONS: Final = {"validated": "promote.validated", "production": "promote.production"}
# The body fields that mean something for one target stage only: sent for the other, they are
# refused rather than ignored (a `force` that silently does nothing misleads).
STAGE_FIELDS: Final = {
    "validated": ("checkpoint", "force", "reason", "validation_results"),
    "production": ("version", "security_reviewed_by", "deployment_config"),
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateIn(_Body):
    checkpoint: str | None = Field(None, max_length=200, description="epoch_70, best, latest")
    validation_results: dict[str, JsonValue] | None = Field(
        None, description="metrics the policy's thresholds read; judged, never trusted"
    )


class ReportOut(BaseModel):
    id: int
    version: str
    checkpoint: str | None
    policy_sha256: str
    passed: bool
    actor: str
    created_at: datetime
    report: dict[str, Any] = Field(description="the stored validation report: every check's verdict and detail")


class PromoteIn(_Body):
    to: Literal["validated", "production"]
    checkpoint: str | None = Field(None, max_length=200, description="to validated: the checkpoint kept")
    version: str | None = Field(None, max_length=100, description="to production: a new semantic version")
    force: bool = Field(False, description="to validated past failed gates: admins only, with a reason")
    reason: str | None = Field(None, max_length=TEXT)
    security_reviewed_by: str | None = Field(None, max_length=200)
    validation_results: dict[str, JsonValue] | None = None
    deployment_config: dict[str, JsonValue] | None = Field(None, description="to production: replicas, resources")

    def check_stage_fields(self) -> None:
        """Refuse a field that only the other target stage reads, naming it."""
        for stage, names in STAGE_FIELDS.items():
            for name in names:
                if stage != self.to and getattr(self, name) not in (None, False):
                    raise InvalidInputError(f"'{name}' applies to promotions to {stage}, not to {self.to}", field=name)


class ApproveIn(_Body):
    note: str | None = Field(None, max_length=TEXT)


class ApprovalOut(BaseModel):
    version: str
    approved_by: str
    os_user: str = Field(description="who made the request: the key's owner over HTTP")
    at: datetime
    note: str | None


class StatusIn(_Body):
    status: str = Field(max_length=20, description="deprecated, demoted or restored")
    reason: str = Field(max_length=TEXT)


class AliasOut(BaseModel):
    alias: str
    ref: str
    set_by: str
    set_at: datetime


class AliasIn(_Body):
    version: str = Field(min_length=1, max_length=200, description="a REF of this artifact: 3, validated, 1.0.0")
    reason: str | None = Field(None, max_length=TEXT)

    @field_validator("version")
    @classmethod
    def _a_ref_not_a_reference(cls, value: str) -> str:
        if "@" in value:
            raise ValueError("give the version as a REF of this artifact (3, validated, 1.0.0), not NAME@REF")
        return value


class AliasSetOut(AliasOut):
    previous: str | None = Field(description="the version the alias pointed at before (null: new)")


class AliasRemovedOut(BaseModel):
    alias: str
    ref: str = Field(description="the version it pointed at")


class PruneIn(_Body):
    keep_last: int = Field(description="keep the newest N raw versions")
    older_than: str | None = Field(None, max_length=20, description="only versions older than this: 30m, 12h, 7d")
    dry_run: bool = Field(True, description="only list what would go")


class PruneOut(BaseModel):
    dry_run: bool
    removed: list[str]
    kept: list[dict[str, str]]
    bytes_at_most: int


# -- the promotion gate: its permission depends on the target stage ------------------------------


def may_promote(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Refuse, before the body is read, a caller who may promote to no stage at all."""
    if not any(principal.can(permission) for permission in PROMOTE_PERMISSIONS.values()):
        needed = " or ".join(f"'{permission}'" for permission in PROMOTE_PERMISSIONS.values())
        raise refusal(principal, f"the {needed} permission")
    return principal


class PromotionGate:
    """The dependency of `promote`: `PROMOTE_PERMISSIONS[body.to]`, and `force` when forcing."""

    field: Final = "to"
    permissions: Final = PROMOTE_PERMISSIONS

    def __call__(self, body: PromoteIn, principal: Annotated[Principal, Depends(may_promote)]) -> Principal:
        check_permission(principal, self.permissions[body.to])
        if body.force:
            check_permission(principal, "force")
        return principal


Promoter = Annotated[Principal, Depends(PromotionGate())]


# -- validation and promotion ------------------------------------------------------------------------


@router.post(
    "/artifacts/{name}/versions/{ref}/validate",
    response_model=ReportOut,
    status_code=201,
    summary="Run the default policy's gates on a version and store the report",
)
def validate(name: str, ref: str, body: ValidateIn, registry: RegistryDep, principal: Validator) -> ReportOut:
    with registry.acting_as(principal):
        outcome = registry.validate(
            f"{name}@{ref}", checkpoint=body.checkpoint, validation_results=body.validation_results
        )
        stored = [r for r in registry.catalog.lifecycle.reports(outcome.version) if r.id == outcome.report_id]
    return _report_out(stored[0])


@router.get(
    "/artifacts/{name}/versions/{ref}/reports", response_model=list[ReportOut], summary="A version's stored reports"
)
def reports(name: str, ref: str, registry: RegistryDep, principal: Reader) -> list[ReportOut]:
    with registry.acting_as(principal):
        version = registry.show(f"{name}@{ref}")
        return [_report_out(stored) for stored in registry.catalog.lifecycle.reports(version)]


def _report_out(stored: Any) -> ReportOut:
    import json

    return ReportOut(
        id=stored.id,
        version=stored.version,
        checkpoint=stored.checkpoint,
        policy_sha256=stored.policy_sha256,
        passed=stored.passed,
        actor=stored.actor,
        created_at=stored.created_at,
        report=json.loads(stored.report_json),
    )


@router.post(
    "/artifacts/{name}/versions/{ref}/promote",
    response_model=VersionOut,
    status_code=201,
    summary="Promote raw -> validated (every gate passes) or validated -> production (approved)",
)
def promote(name: str, ref: str, body: PromoteIn, registry: RegistryDep, principal: Promoter) -> VersionOut:
    body.check_stage_fields()
    with registry.acting_as(principal):
        promoted = registry.promote(
            f"{name}@{ref}",
            body.to,
            checkpoint=body.checkpoint,
            validation_results=body.validation_results,
            force=body.force,
            reason=body.reason,
            version=body.version,
            approved_by=principal.name if body.to == "production" else None,
            deployment_config=body.deployment_config,
            security_reviewed_by=body.security_reviewed_by,
        )
        return version_out(registry, promoted)


# -- approvals -------------------------------------------------------------------------------------------


@router.post(
    "/artifacts/{name}/versions/{ref}/approve",
    response_model=list[ApprovalOut],
    status_code=201,
    summary="Approve a validated version for production (recorded as the key's owner)",
)
def approve(name: str, ref: str, body: ApproveIn, registry: RegistryDep, principal: Approver) -> list[ApprovalOut]:
    with registry.acting_as(principal):
        version = registry.approve(f"{name}@{ref}", approved_by=principal.name, note=body.note)
        return _approvals(registry, version)


@router.get(
    "/artifacts/{name}/versions/{ref}/approvals", response_model=list[ApprovalOut], summary="A version's approvals"
)
def approvals(name: str, ref: str, registry: RegistryDep, principal: Reader) -> list[ApprovalOut]:
    with registry.acting_as(principal):
        return _approvals(registry, registry.show(f"{name}@{ref}"))


def _approvals(registry: Any, version: Any) -> list[ApprovalOut]:
    return [
        ApprovalOut(version=a.version, approved_by=a.approved_by, os_user=a.os_user, at=a.at, note=a.note)
        for a in registry.catalog.lifecycle.approvals(version)
    ]


# -- status: deprecate, demote, restore -----------------------------------------------------------------


@router.post(
    "/artifacts/{name}/versions/{ref}/status",
    response_model=VersionOut,
    summary="Deprecate, demote or restore a version (a recorded event with its reason)",
)
def set_status(name: str, ref: str, body: StatusIn, registry: RegistryDep, principal: StatusChanger) -> VersionOut:
    with registry.acting_as(principal):
        version = registry.set_status(f"{name}@{ref}", body.status, reason=body.reason)
        return version_out(registry, version)


# -- aliases ---------------------------------------------------------------------------------------------


@router.get("/artifacts/{name}/aliases", response_model=list[AliasOut], summary="An artifact's free aliases")
def list_aliases(name: str, registry: RegistryDep, principal: Reader) -> list[AliasOut]:
    with registry.acting_as(principal):
        return [
            AliasOut(alias=e.alias, ref=e.version, set_by=e.set_by, set_at=e.set_at) for e in registry.aliases(name)
        ]


@router.put(
    "/artifacts/{name}/aliases/{alias}",
    response_model=AliasSetOut,
    summary="Point a free alias (champion, ...) at a version, or move it there (audited)",
)
def set_alias(name: str, alias: str, body: AliasIn, registry: RegistryDep, principal: AliasMover) -> AliasSetOut:
    with registry.acting_as(principal):
        previous = registry.set_alias(f"{name}@{body.version}", alias, approved_by=principal.name, reason=body.reason)
        entry = next(e for e in registry.aliases(name) if e.alias == alias)
    return AliasSetOut(alias=alias, ref=entry.version, set_by=entry.set_by, set_at=entry.set_at, previous=previous)


@router.delete("/artifacts/{name}/aliases/{alias}", response_model=AliasRemovedOut, summary="Remove an alias")
def remove_alias(
    name: str,
    alias: str,
    registry: RegistryDep,
    principal: AliasMover,
    reason: Annotated[str | None, Query(max_length=TEXT)] = None,
) -> AliasRemovedOut:
    with registry.acting_as(principal):
        pointed = registry.remove_alias(name, alias, approved_by=principal.name, reason=reason)
    return AliasRemovedOut(alias=alias, ref=pointed)


# -- the audit log and pruning ------------------------------------------------------------------------


@router.get("/audit", summary="Audit events, newest first: all, one artifact's (NAME) or one version's (NAME@REF)")
def audit(
    registry: RegistryDep,
    principal: Reader,
    artifact: Annotated[str | None, Query(max_length=300, description="NAME or NAME@REF")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_AUDIT_OFFSET, description="skip the newest N events (a page)")] = 0,
) -> list[dict[str, Any]]:
    with registry.acting_as(principal):
        if artifact is not None and "@" not in artifact:
            registry.versions(artifact)  # an unknown name is a 404, not an empty history
        return registry.audit(artifact, limit=limit, offset=offset)


@router.post(
    "/artifacts/{name}/prune",
    response_model=PruneOut,
    summary="Remove raw versions that nothing promoted, aliased or deployed (a dry run by default)",
)
def prune(name: str, body: PruneIn, registry: RegistryDep, principal: Pruner) -> PruneOut:
    from modelyard.config import parse_duration

    seconds = parse_duration(body.older_than, "older_than") if body.older_than else None
    with registry.acting_as(principal):
        report = registry.prune(name, keep_last=body.keep_last, older_than_seconds=seconds, dry_run=body.dry_run)
    return PruneOut(
        dry_run=report.dry_run,
        removed=[version.ref for version in report.removed],
        kept=[{"ref": ref, "why": why} for ref, why in report.kept],
        bytes_at_most=report.bytes_freed_at_most,
    )
