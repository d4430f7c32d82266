"""`Registry`: the Python API. The CLI (and later the server and web UI) are thin layers on it.

    from modelyard import Registry

    with Registry.open() as registry:                 # ~/.modelyard, or MODELYARD_HOME
        result = registry.register("runs/v5_5", RegisterOptions(precision="fp16"))
        print(result.version.ref)                      # e.g. vision-vit-base16-embed-v1@3
        version = registry.show("vision-vit-base16-embed-v1@latest")
        registry.export(version.ref, to=Path("out"))
        report = registry.verify()

The store and the catalog open lazily: an unchanged re-registration on the embedded SQLite
catalog answers without loading SQLAlchemy at all.
"""

from __future__ import annotations

import builtins
import contextlib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelyard.config import Settings
from modelyard.domain import ListFilters, ModelEntry, Registration, VersionRecord, VersionSummary
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import parse_reference
from modelyard.progress import Progress, ProgressBoard
from modelyard.register.metadata import RegisterOptions
from modelyard.store import BlobStore, open_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from modelyard.access import ApiKey, Principal
    from modelyard.catalog.catalog import Catalog
    from modelyard.catalog.deployments import Deployment
    from modelyard.catalog.lifecycle import AliasEntry, Approval, StatusEntry, StoredReport
    from modelyard.distribute.bundle import BundleReport, ImportReport
    from modelyard.distribute.check import NodeCheck
    from modelyard.distribute.drift import DriftReport
    from modelyard.distribute.fleet import Fleet
    from modelyard.distribute.install import Outcome
    from modelyard.distribute.plan import Assignment, DistributionPlan
    from modelyard.distribute.push import PushOptions, PushReport
    from modelyard.export import ExportResult
    from modelyard.gc import GcReport
    from modelyard.inspect.hints import Hints
    from modelyard.lifecycle.governance import PruneReport
    from modelyard.lifecycle.layout import LayoutReport
    from modelyard.lifecycle.lineage import LineageStep
    from modelyard.lifecycle.policy import Policy
    from modelyard.lifecycle.promote import ValidationOutcome
    from modelyard.marketplace import MarketplaceImport
    from modelyard.marketplace.apply import ImportResult
    from modelyard.modelconfig import BaseModelConfig, Compatibility
    from modelyard.verify import VerifyReport

DEFAULT_GC_LOCK_TIMEOUT = 60.0


class Registry:
    """A model-artifact registry: a content-addressed store plus a SQL catalog."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: BlobStore | None = None
        self._catalog: Catalog | None = None

    @classmethod
    def open(
        cls, home: str | Path | None = None, *, db_url: str | None = None, store_url: str | None = None
    ) -> Registry:
        """Open the registry in `home` (default: MODELYARD_HOME, else ~/.modelyard)."""
        return cls(Settings.load(home=home, db_url=db_url, store_url=store_url))

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = open_store(self.settings.store_url)
        return self._store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from modelyard.catalog.catalog import Catalog

            self._catalog = Catalog(self.settings.db_url)
        return self._catalog

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- register -------------------------------------------------------------------------

    def register(
        self,
        path: str | Path,
        options: RegisterOptions | None = None,
        *,
        link: bool = False,
        progress: Progress | None = None,
    ) -> Registration:
        """Register a training output directory (or one file) as the next version of an artifact.

        With `link=True` files are reflinked or hardlinked into the store instead of copied
        (same filesystem only). A hardlinked file shares its inode with the stored blob: it
        becomes read-only, and editing it in place changes the stored bytes (`verify` reports it).
        """
        from modelyard.register.flow import RegistryParts
        from modelyard.register.flow import register as run

        parts = RegistryParts(
            settings=self.settings,
            store=lambda: self.store,
            catalog=lambda: self.catalog,
            find_existing=self._find_existing,
        )
        return run(parts, path, options, link=link, progress=progress)

    def register_zip(
        self, path: str | Path, options: RegisterOptions | None = None, *, progress: Progress | None = None
    ) -> Registration:
        """Register seed 000's upload ZIP (a run directory with artifact_manifest.json inside) as
        one version, as `register` registers that directory."""
        from modelyard.register.zipped import register_zip

        return register_zip(self, path, options, progress=progress)

    def _find_existing(self, name: str, content_key: str) -> VersionRecord | None:
        if self._catalog is None:
            from modelyard.catalog import SCHEMA_REVISION
            from modelyard.catalog.fastpath import find_by_content, sqlite_file

            db_file = sqlite_file(self.settings.db_url)
            if db_file is not None:
                return find_by_content(db_file, SCHEMA_REVISION, name, content_key)
        return self.catalog.find_by_content(name, content_key)

    # -- read -----------------------------------------------------------------------------

    def show(self, reference: str) -> VersionRecord:
        """The version `NAME`, `NAME@N` or `NAME@latest` names."""
        return self.catalog.resolve(parse_reference(reference))

    def list(
        self,
        filters: ListFilters | None = None,
        *,
        all_versions: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[VersionSummary]:
        """Artifacts (their latest version), or with `all_versions` every version, matching filters;
        `limit` and `offset` page through them (by name, newest version first)."""
        return self.catalog.list_versions(
            filters or ListFilters(), latest_only=not all_versions, limit=limit, offset=offset
        )

    def count(self, filters: ListFilters | None = None, *, all_versions: bool = False) -> int:
        """How many `list` would return without a limit."""
        return self.catalog.count_versions_matching(filters or ListFilters(), latest_only=not all_versions)

    def versions(self, name: str) -> builtins.list[VersionRecord]:
        return self.catalog.versions_of(name)

    # -- the typed model catalog (seed 002) -----------------------------------------------

    def inspect(self, path: str | Path, hints: Hints | None = None) -> BaseModelConfig:
        """Inspect a model file or folder without registering it (headers and side files only)."""
        from modelyard.inspect import inspect_path

        return inspect_path(Path(path), hints)

    def model_config(self, reference: str) -> BaseModelConfig | None:
        """The typed configuration stored for a version; None if it was registered uninspected."""
        stored = self.catalog.model_config(self.show(reference))
        return stored.config if stored is not None else None

    def model_entry(self, reference: str) -> ModelEntry:
        """Seed 002's ModelEntry view of a version."""
        version = self.show(reference)
        stored = self.catalog.model_config(version)
        config = stored.config if stored is not None else None
        return ModelEntry(
            id=version.ref,
            name=version.artifact_name,
            author=(config.author if config else None) or version.registered_by,
            path=version.source_path,
            size=version.manifest.total_size,
            status="raw",
            added_at=version.registered_at,
            model_type=config.model_type if config else "unknown",
            config=config,
        )

    def compat(self, reference: str, runtime: str | None = None) -> builtins.list[Compatibility]:
        """Which runtimes can serve a version, each with the reason (seed 002's is_compatible_with)."""
        from modelyard.modelconfig.runtimes import RUNTIMES

        config = self.model_config(reference)
        if config is None:
            raise NotFoundError(
                f"{reference} has no model entry (registered without inspection); "
                f"run 'modelyard reinspect {reference}' first"
            )
        if runtime is not None:
            if runtime not in RUNTIMES:
                raise InvalidInputError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}", field="runtime")
            return [config.is_compatible_with(runtime)]
        return config.compatibility()

    def reinspect(self, target: str | None = None, *, outdated_only: bool = False) -> builtins.list[VersionRecord]:
        """Inspect stored versions again (all, one artifact's, or one `NAME@REF`) from their blobs
        and replace their model entries, each with an audit event. Returns the versions redone."""
        from modelyard.inspect import INSPECTOR_VERSION, Hints, inspect_tree
        from modelyard.inspect.tree import BlobTree
        from modelyard.register.flow import current_user

        versions = self._versions_for(target)
        redone = []
        for version in versions:
            stored = self.catalog.model_config(version)
            if outdated_only and stored is not None and stored.inspector_version >= INSPECTOR_VERSION:
                continue
            manifest = version.manifest
            tree = BlobTree(self.store.open, version.ref, {f.path: (f.size, f.sha256) for f in manifest.files})
            hints = Hints(
                artifact_name=version.artifact_name,
                component=manifest.component,
                task=manifest.task,
                node_type=manifest.node_type,
                base_model=manifest.base_model,
            )
            config = inspect_tree(tree, hints)
            self.catalog.set_model_config(
                version,
                config,
                actor=current_user(),
                action="inspect",
                inspector_version=INSPECTOR_VERSION,
                details={"model_type": config.model_type, "pickle_verdict": config.pickle_scan.verdict},
            )
            redone.append(version)
        return redone

    # -- marketplace metadata ---------------------------------------------------------------

    def fetch_hf(
        self, repo_id: str, *, revision: str | None = None, from_file: Path | None = None
    ) -> tuple[MarketplaceImport, builtins.list[str]]:
        """A Hugging Face Hub repository's model info as a typed import (from a saved answer, or
        the Hub); and warnings about the request. Nothing is written."""
        from modelyard.marketplace.huggingface import load_model_info

        return load_model_info(repo_id, revision=revision, from_file=from_file)

    def fetch_civitai(self, version_id: str | int | None = None, *, from_file: Path | None = None) -> MarketplaceImport:
        """A CivitAI model version as a typed import (from a saved answer, or CivitAI)."""
        from modelyard.marketplace.civitai import load_model_version

        return load_model_version(version_id, from_file=from_file)

    def import_metadata(self, reference: str, imported: MarketplaceImport) -> ImportResult:
        """Merge marketplace metadata into a version's model entry once every hash the answer
        states matches the version's file (else ConflictError and nothing written); audited."""
        from modelyard.marketplace.apply import import_into

        return import_into(self, reference, imported)

    # -- lifecycle (seed 003) ---------------------------------------------------------------

    def validate(
        self,
        reference: str,
        *,
        checkpoint: str | None = None,
        policy: Policy | Path | None = None,
        validation_results: dict[str, Any] | None = None,
    ) -> ValidationOutcome:
        """Run a policy's gates (default: files, readability, pickles, manifest) on a version and
        one of its checkpoints; the report is stored. `validation_results` are judged, not trusted."""
        from modelyard.lifecycle.promote import validate

        return validate(
            self,
            reference,
            checkpoint=checkpoint,
            policy=policy,
            validation_results=validation_results,
            actor=self._actor(),
        )

    def promote(
        self,
        reference: str,
        to: str,
        *,
        checkpoint: str | None = None,
        policy: Policy | Path | None = None,
        validation_results: dict[str, Any] | None = None,
        force: bool = False,
        reason: str | None = None,
        version: str | None = None,
        approved_by: str | None = None,
        benchmarks: Path | None = None,
        deployment_config: dict[str, Any] | None = None,
        security_reviewed_by: str | None = None,
    ) -> VersionRecord:
        """Promote a raw version to validated (its gates must pass, or an admin forces it with a
        reason) or a validated version to production (a new semantic `version` and an approval)."""
        from modelyard.lifecycle import promote as lifecycle

        if to == "validated":
            if force:
                self._require_admin("--force")
            return lifecycle.promote_to_validated(
                self,
                reference,
                checkpoint=checkpoint,
                policy=policy,
                validation_results=validation_results,
                force=force,
                reason=reason,
                actor=self._actor(),
            )
        if to == "production":
            if version is None:
                raise InvalidInputError(
                    "production promotion needs a semantic version (--version 1.0.0)", field="version"
                )
            return lifecycle.promote_to_production(
                self,
                reference,
                version=version,
                approved_by=approved_by,
                policy=policy,
                benchmarks=benchmarks,
                deployment_config=deployment_config,
                security_reviewed_by=security_reviewed_by,
                actor=self._actor(),
            )
        raise InvalidInputError(f"cannot promote to {to!r}; use validated or production", field="to")

    def approve(self, reference: str, *, approved_by: str, note: str | None = None) -> VersionRecord:
        """Record a manual approval of a validated version for production (the OS user beside it)."""
        from modelyard.lifecycle.governance import approve

        return approve(self, reference, approved_by, note, self._actor())

    def set_alias(self, reference: str, alias: str, *, approved_by: str, reason: str | None = None) -> str | None:
        """Point a free alias (`NAME@champion`) at a version; returns the version it left."""
        from modelyard.lifecycle.governance import set_alias

        return set_alias(self, reference, alias, approved_by, reason)

    def remove_alias(self, name: str, alias: str, *, approved_by: str, reason: str | None = None) -> str:
        from modelyard.lifecycle.governance import remove_alias

        return remove_alias(self, name, alias, approved_by, reason)

    def aliases(self, name: str) -> builtins.list[AliasEntry]:
        return self.catalog.lifecycle.aliases(name)

    def set_status(self, reference: str, status: str, *, reason: str) -> VersionRecord:
        """Demote, deprecate or restore a version (a recorded event; the version never changes)."""
        from modelyard.lifecycle.governance import change_status

        return change_status(self, reference, status, self._actor(), reason)

    def status_history(self, reference: str) -> builtins.list[StatusEntry]:
        """A version's deprecate/demote/restore events, oldest first."""
        return self.catalog.lifecycle.status_history(self.show(reference))

    def approvals(self, reference: str) -> builtins.list[Approval]:
        """A version's production approvals, oldest first."""
        return self.catalog.lifecycle.approvals(self.show(reference))

    def reports(self, reference: str) -> builtins.list[StoredReport]:
        """A version's stored validation reports, oldest first."""
        return self.catalog.lifecycle.reports(self.show(reference))

    def lineage(self, reference: str) -> builtins.list[LineageStep]:
        """The chain production -> validated -> raw checkpoint -> training session."""
        from modelyard.lifecycle.lineage import lineage

        return lineage(self, reference)

    def audit(
        self, target: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, object]]:
        """Audit events, newest first: all, one artifact's (NAME), or one version's (NAME@REF);
        `offset` skips the newest events (pages)."""
        if target is None:
            return self.catalog.events(limit, offset=offset)
        if "@" in target:
            version = self.show(target)
            return self.catalog.events(
                limit, artifact_name=version.artifact_name, version_number=version.number, offset=offset
            )
        return self.catalog.events(limit, artifact_name=target, offset=offset)

    def prune(
        self, name: str, *, keep_last: int, older_than_seconds: float | None = None, dry_run: bool = True
    ) -> PruneReport:
        """Remove raw versions beyond the newest `keep_last` that nothing promoted, aliased or
        deployed; a dry run by default. `gc` then frees their bytes."""
        from modelyard.lifecycle.governance import prune

        return prune(
            self,
            name,
            keep_last=keep_last,
            older_than_seconds=older_than_seconds,
            dry_run=dry_run,
            actor=self._actor(),
            protected=self._deployed_refs(),
        )

    def layout(self, root: str | Path, names: builtins.list[str] | None = None) -> LayoutReport:
        """Materialise seed 003's raw/validated/production tree under `root` (hardlinks, atomic)."""
        from modelyard.lifecycle.layout import sync_layout

        return sync_layout(self, Path(root), names)

    # -- fleet distribution (seed 004) -------------------------------------------------------

    def fleet(self, path: str | Path | None = None) -> Fleet:
        """The fleet file given, else `<home>/fleet.yaml`."""
        from modelyard.distribute.fleet import load_fleet

        return load_fleet(Path(path) if path is not None else None, self.settings.home)

    def fleet_check(self, fleet: Fleet, nodes: builtins.list[str] | None = None) -> builtins.list[NodeCheck]:
        """Connect to each node: reachable or not, free disk, tools and hasher there."""
        from modelyard.distribute.check import check_fleet

        return check_fleet(fleet, nodes)

    def plan_deployment(
        self,
        assignments: builtins.list[str] | builtins.list[Assignment],
        *,
        fleet: Fleet,
        require_stage: str = "production",
        all_files: bool = False,
    ) -> DistributionPlan:
        """A distribution plan for `NAME@REF=TARGETS` assignments; refused before anything is sent
        when a node is unknown, a version is not in the required stage or an adapter's base model
        cannot be found on a node."""
        from modelyard.distribute.plan import build_plan, parse_assignment

        parsed = [parse_assignment(a) if isinstance(a, str) else a for a in assignments]
        return build_plan(self, fleet, parsed, require_stage=require_stage, all_files=all_files)

    def push(
        self, plan: DistributionPlan, options: PushOptions | None = None, board: ProgressBoard | None = None
    ) -> PushReport:
        """Execute a plan: transfer, verify on the node, switch, activate, check health."""
        from modelyard.distribute.push import push

        return push(self, plan, options, board)

    def deployments(self, name: str | None = None, node: str | None = None) -> builtins.list[Deployment]:
        """What the catalog knows of each node, newest first."""
        return self.catalog.deployments.deployments(node=node, name=name)

    def rollback(self, name: str, node: str, fleet: Fleet) -> Outcome:
        """Serve the previous verified version of `name` still on `node` again."""
        from modelyard.distribute.rollback import rollback

        return rollback(self, fleet, name, node)

    def verify_deployments(
        self, fleet: Fleet, *, nodes: builtins.list[str] | None = None, name: str | None = None
    ) -> DriftReport:
        """Re-hash what every node serves; report what drifted since the last verification."""
        from modelyard.distribute.drift import verify_fleet

        return verify_fleet(self, fleet, nodes=nodes, name=name)

    def describe_for_pull(
        self, reference: str, *, require_stage: str = "production", all_files: bool = False
    ) -> dict[str, Any]:
        """What a node pulling `reference` fetches: the planned files, the manifest text and
        where the blobs lie (`modelyard deploy describe`, run over SSH by `modelyard pull`)."""
        from modelyard.distribute.plan import describe_version

        item = describe_version(self, reference, require_stage=require_stage, all_files=all_files)
        objects = getattr(self.store, "objects", None)
        if objects is None:
            raise InvalidInputError("pulling over SSH needs a local store; this registry's store is remote")
        return {
            "artifact": item.model_dump(mode="json"),
            "manifest": self.show(item.ref).manifest.to_json(),
            "blob_root": str(objects),
        }

    def record_pull(self, record: dict[str, Any]) -> None:
        """A node's report of a pull (`modelyard deploy record`): its status joins the matrix."""
        from modelyard.catalog.deployments import DEPLOYMENT_STATUSES, DeploymentKey
        from modelyard.distribute.fleet import check_target_name

        try:
            key = DeploymentKey(
                node=str(record["node"]),
                target_name=str(record["target_name"]),
                version_dir=str(record["version_dir"]),
                artifact_name=str(record["artifact_name"]),
                version_number=int(record["version_number"]),
                serving_path=str(record["serving_path"]),
            )
            status = str(record["status"])
            check_target_name(key.target_name)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"a pull record needs node, target_name, ...: {exc}", field="record") from None
        if status not in DEPLOYMENT_STATUSES:
            raise InvalidInputError(f"unknown status {status!r}", field="status")
        self.show(f"{key.artifact_name}@{key.version_number}")
        self.catalog.deployments.set_status(
            key,
            status,
            actor=f"{self._actor()} (pull from {key.node})",
            reason=str(record.get("reason") or ""),
            checks=record.get("checks") or None,
            files=record.get("files") or None,
        )

    def bundle(
        self,
        references: builtins.list[str],
        out: Path,
        *,
        with_lineage: bool = True,
        gzip: bool = False,
        force: bool = False,
    ) -> BundleReport:
        """Write versions (with their lineage, typed configs and blobs) to a bundle for an
        air-gapped registry."""
        from modelyard.distribute.bundle_write import write_bundle

        return write_bundle(self, references, out, with_lineage=with_lineage, gzip=gzip, force=force)

    def import_bundle(self, path: Path) -> ImportReport:
        """Import a bundle, checking every digest before anything becomes visible (twice: a no-op)."""
        from modelyard.distribute.bundle_import import import_bundle

        return import_bundle(self, path)

    def _deployed_refs(self) -> set[str]:
        """Versions some fleet node still holds: never pruned."""
        return self.catalog.deployments.on_nodes()

    # -- API keys and who acts ------------------------------------------------------------------

    def create_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        """A new API key for the server: (its record, the secret). The secret is shown once;
        only its SHA-256 is stored."""
        from modelyard.access import check_key_name, check_role, digest, new_secret

        secret = new_secret()
        record = self.catalog.keys.add(
            check_key_name(name), check_role(role), digest(secret), secret[:8], self._actor()
        )
        return record, secret

    def revoke_key(self, name: str) -> ApiKey:
        return self.catalog.keys.revoke(name, self._actor())

    def keys(self) -> builtins.list[ApiKey]:
        return self.catalog.keys.list()

    def authenticate(self, secret: str) -> Principal | None:
        """The owner and role of an active key; None for an unknown or revoked one."""
        from modelyard.access import digest

        return self.catalog.keys.principal(digest(secret))

    @contextlib.contextmanager
    def acting_as(self, principal: Principal) -> Iterator[None]:
        """Registry calls in this block act for `principal` (the server's requests): audit events
        name them, and admin-only operations check their role."""
        from modelyard.access import current_principal

        token = current_principal.set(principal)
        try:
            yield
        finally:
            current_principal.reset(token)

    def _actor(self) -> str:
        from modelyard.register.flow import acting_user

        return acting_user()

    def _require_admin(self, what: str) -> None:
        """Locally the admins are the OS users `[lifecycle] admins` lists (anyone when unset:
        whoever runs the CLI owns the store's files); a server request needs an admin key."""
        from modelyard.access import current_principal

        principal = current_principal.get()
        if principal is not None:
            if not principal.can("force"):
                from modelyard.errors import PermissionDeniedError

                raise PermissionDeniedError(f"{what} needs an admin key; {principal.name} is a {principal.role}")
            return
        admins = self.settings.admins
        if admins and self._actor() not in admins:
            from modelyard.errors import PermissionDeniedError

            raise PermissionDeniedError(
                f"{what} is for admins ({', '.join(admins)}); {self._actor()} is not one ([lifecycle] admins)"
            )

    def _versions_for(self, target: str | None) -> builtins.list[VersionRecord]:
        if target is None:
            return [self.show(row.ref) for row in self.list(all_versions=True)]
        if "@" in target:
            return [self.show(target)]
        return self.versions(target)

    def events(self, limit: int = 100) -> builtins.list[dict[str, object]]:
        """The newest audit-log entries."""
        return self.catalog.events(limit)

    # -- export, verify, gc ---------------------------------------------------------------

    def export(
        self,
        reference: str,
        *,
        to: Path | None = None,
        zip_path: Path | None = None,
        progress: Progress | None = None,
    ) -> ExportResult:
        """Write a version's files and `artifact_manifest.json` to a new directory and/or a ZIP."""
        from modelyard.export import export_version

        if to is None and zip_path is None:
            raise InvalidInputError("export needs a destination: a directory (--to) or a ZIP file (--zip)")
        version = self.show(reference)
        return export_version(version, self.store, to=to, zip_path=zip_path, progress=progress)

    def verify(
        self, target: str | None = None, *, quarantine: bool = True, progress: Progress | None = None
    ) -> VerifyReport:
        """Re-hash the blobs of every version, of one artifact (`NAME`), or of one version (`NAME@REF`)."""
        from modelyard.verify import verify_blobs

        if target is None:
            versions = None
            count = self.catalog.count_versions()
        elif "@" in target:
            versions = [self.show(target)]
            count = 1
        else:
            versions = self.versions(target)
            count = len(versions)
        uses = self.catalog.file_uses(versions)
        return verify_blobs(
            uses,
            self.store,
            versions=count,
            workers=self.settings.hash_workers,
            quarantine=quarantine,
            progress=progress,
        )

    def gc(
        self,
        *,
        dry_run: bool = False,
        grace_seconds: float | None = None,
        lock_timeout: float = DEFAULT_GC_LOCK_TIMEOUT,
    ) -> GcReport:
        """Remove blobs no version references and older than the grace period (plan only if dry_run)."""
        from modelyard.gc import plan_gc, sweep
        from modelyard.register.flow import current_user

        grace = self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        plan = plan_gc(self.store, self.catalog.referenced_digests(), grace, dry_run=dry_run)
        if dry_run or (not plan.removable and not plan.temporaries):
            return plan
        with self.store.exclusive(timeout=lock_timeout):
            report = sweep(self.store, plan, self.catalog.referenced_digests())
        self.catalog.record_event(
            current_user(),
            "gc",
            details={"blobs_removed": len(report.removable), "bytes_removed": report.bytes_removable},
        )
        return report
