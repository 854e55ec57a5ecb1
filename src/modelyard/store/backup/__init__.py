"""Backup and restore of a whole yard: its metadata store and the artifacts it uses, in one
archive (docs/operations/backup.md; the format: docs/decisions/0022-backup-format.md)."""

from modelyard.store.backup.errors import (
    BackupFailed,
    BackupInvalid,
    RestoreFailed,
    RestoreTargetNotEmpty,
)
from modelyard.store.backup.manifest import Manifest
from modelyard.store.backup.progress import Progress, Silent
from modelyard.store.backup.restore import RestoreResult, read_manifest, restore_backup
from modelyard.store.backup.snapshot import AuditCheck
from modelyard.store.backup.write import BackupResult, create_backup

__all__ = [
    "AuditCheck",
    "BackupFailed",
    "BackupInvalid",
    "BackupResult",
    "Manifest",
    "Progress",
    "RestoreFailed",
    "RestoreResult",
    "RestoreTargetNotEmpty",
    "Silent",
    "create_backup",
    "read_manifest",
    "restore_backup",
]
