"""What can go wrong in a backup or a restore, each with a stable code."""

from __future__ import annotations

from modelyard.domain.errors import ModelyardError


class BackupInvalid(ModelyardError):
    """The archive is not a Modelyard backup, is incomplete, or a member fails its sha256."""

    code, status, title = "backup_invalid", 400, "Backup archive is invalid"


class BackupFailed(ModelyardError):
    """The backup could not be written (nothing is left at its path)."""

    code, status, title = "backup_failed", 500, "Backup failed"


class RestoreTargetNotEmpty(ModelyardError):
    code, status, title = "restore_target_not_empty", 409, "Restore target is not empty"


class RestoreFailed(ModelyardError):
    """The rows did not load or did not verify; the transaction was rolled back."""

    code, status, title = "restore_failed", 422, "Restore failed"
