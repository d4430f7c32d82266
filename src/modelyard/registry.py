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
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from modelyard.config import Settings
from modelyard.domain import ListFilters, Registration, VersionRecord, VersionSummary
from modelyard.errors import InvalidInputError
from modelyard.names import parse_reference
from modelyard.progress import Progress
from modelyard.register.metadata import RegisterOptions
from modelyard.store import BlobStore, open_store

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog
    from modelyard.export import ExportResult
    from modelyard.gc import GcReport
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

    def list(self, filters: ListFilters | None = None, *, all_versions: bool = False) -> list[VersionSummary]:
        """Artifacts (their latest version), or with `all_versions` every version, matching filters."""
        return self.catalog.list_versions(filters or ListFilters(), latest_only=not all_versions)

    def versions(self, name: str) -> builtins.list[VersionRecord]:
        return self.catalog.versions_of(name)

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
