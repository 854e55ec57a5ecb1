"""Errors are values with a stable machine-readable ``code``.

They are raised anywhere below the edges and turned into RFC 9457 problem+json once, by the
HTTP layer, or into a one-line message and a non-zero exit code by the CLI.
"""

from __future__ import annotations

from typing import Any


class ModelyardError(Exception):
    """Base of every error a caller can act on."""

    code = "error"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": f"https://modelyard.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.field is not None:
            problem["field"] = self.field
        problem.update(self.extra)
        return problem


class InvalidRequest(ModelyardError):
    code, status, title = "invalid_request", 400, "Invalid request"


class InvalidJSON(InvalidRequest):
    code, title = "invalid_json", "Body is not valid JSON"


class UnsupportedMediaType(ModelyardError):
    code, status, title = "unsupported_media_type", 415, "Unsupported media type"


class PayloadTooLarge(ModelyardError):
    code, status, title = "payload_too_large", 413, "Payload too large"


class InvalidInput(ModelyardError):
    """An inference input does not match the model's signature."""

    code, status, title = "invalid_input", 422, "Input does not match the signature"


class ValidationFailed(ModelyardError):
    """A control-plane request is well-formed JSON but its fields are wrong."""

    code, status, title = "validation_failed", 422, "Validation failed"


class InvalidArtifact(ModelyardError):
    code, status, title = "invalid_artifact", 400, "Invalid artifact"


class UntrustedArtifact(ModelyardError):
    code, status, title = "untrusted_artifact", 400, "Artifact needs explicit trust"


class DigestMismatch(ModelyardError):
    code, status, title = "digest_mismatch", 400, "Content does not match its sha256"


class NotFound(ModelyardError):
    code, status, title = "not_found", 404, "Not found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class MonitorNotFound(NotFound):
    code = "monitor_not_found"


class ProfileNotFound(NotFound):
    code = "profile_not_found"


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


class ProjectNotFound(NotFound):
    code = "project_not_found"


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class Conflict(ModelyardError):
    code, status, title = "conflict", 409, "Conflict"


class ApprovalClosed(Conflict):
    """The approval request was already executed, rejected, cancelled or has expired."""

    code = "approval_closed"


class SignatureRequired(Conflict):
    """The project requires a valid signature by one of its trusted keys."""

    code = "signature_required"


class AlreadyExists(Conflict):
    code = "already_exists"


class InUse(Conflict):
    code = "in_use"


class CardIncomplete(Conflict):
    code = "card_incomplete"


class VersionArchived(Conflict):
    code = "version_archived"


class Unauthenticated(ModelyardError):
    code, status, title = "unauthenticated", 401, "Credentials required"


class Forbidden(ModelyardError):
    code, status, title = "forbidden", 403, "Not allowed"


class SelfApproval(Forbidden):
    """Four eyes: the requester of a change can never approve it."""

    code = "self_approval"


class CrossOrigin(Forbidden):
    """A browser-style cross-origin request tried to change something."""

    code = "cross_origin"


class NotReady(ModelyardError):
    code, status, title = "not_ready", 503, "Not ready"


class ModelFailed(ModelyardError):
    """The model itself raised while predicting: a server-side fault, never the caller's."""

    code, status, title = "model_failed", 500, "Model failed"


class TooManyRequests(ModelyardError):
    """A key went past its rate limit or daily quota; ``retry_after_s`` says when to retry."""

    code, status, title = "rate_limited", 429, "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: object) -> None:
        super().__init__(detail, field="authorization", **extra)
        self.retry_after_s = max(1, retry_after_s)


class QuotaExceeded(TooManyRequests):
    code = "quota_exceeded"


class Overloaded(ModelyardError):
    """Load shedding: the request was refused at once instead of queued."""

    code, status, title = "overloaded", 503, "Overloaded, retry later"


class DeadlineExceeded(ModelyardError):
    code, status, title = "deadline_exceeded", 504, "Deadline exceeded"


class ArtifactCorrupted(ModelyardError):
    code, status, title = "artifact_corrupted", 500, "Stored artifact failed its hash check"


class FlavorUnavailable(ModelyardError):
    code, status, title = "flavor_unavailable", 400, "Flavor not available"


def reject_unknown(data: Any, known: set[str], what: str, prefix: str) -> dict[str, Any]:
    """``data`` as a dict, refusing keys outside ``known`` (a typo must not pass silently)."""
    if data is not None and not isinstance(data, dict):
        raise ValidationFailed(f"{what} must be an object", field=prefix)
    data = dict(data or {})
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValidationFailed(f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(known))}",
                               field=f"{prefix}.{unknown[0]}")
    return data
