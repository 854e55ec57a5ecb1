"""Registry persistence: models, versions, tags and aliases over one SQLAlchemy session.

Functions here take a session that the caller's transaction owns, so a service can combine
several of them (and, later, the audit record) in one atomic unit of work.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelyard.domain.errors import (
    AliasNotFound,
    InUse,
    ModelNotFound,
    VersionArchived,
    VersionNotFound,
)
from modelyard.domain.names import ModelRef
from modelyard.domain.registry import Alias, Lineage, Model, ModelVersion
from modelyard.domain.signature import Signature
from modelyard.store.tables import (
    DEFAULT_PROJECT,
    AliasEventRow,
    AliasRow,
    EndpointRow,
    ModelRow,
    VersionRow,
    VersionSignatureRow,
    VersionTagRow,
    utcnow,
)


def model_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
    query = select(ModelRow).where(ModelRow.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise ModelNotFound(f"model {name!r} does not exist", field="model")
    return row


def ensure_model(session: Session, name: str, actor: str, description: str = "",
                 project: str = DEFAULT_PROJECT) -> ModelRow:
    """The model row, created if new, locked for the rest of the transaction.

    INSERT .. ON CONFLICT DO NOTHING first: a plain SELECT .. FOR UPDATE locks nothing while
    the row does not exist, so two first registrations would both try to insert it.
    """
    values = {"name": name, "description": description, "created_by": actor,
              "created_at": utcnow(), "project": project}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(pg_insert(ModelRow).values(**values)
                        .on_conflict_do_nothing(index_elements=["name"]))
    elif dialect == "sqlite":
        session.execute(sqlite_insert(ModelRow).values(**values)
                        .on_conflict_do_nothing(index_elements=["name"]))
    row = session.scalars(
        select(ModelRow).where(ModelRow.name == name).with_for_update()
    ).one_or_none()
    if row is None:
        row = ModelRow(name=name, description=description, created_by=actor,
                       created_at=utcnow(), project=project)
        session.add(row)
        session.flush()
    return row


def add_version(
    session: Session,
    model: ModelRow,
    *,
    flavor: str,
    digest: str,
    size: int,
    signature: Signature,
    lineage: Lineage,
    options: dict[str, Any],
    description: str,
    actor: str,
) -> VersionRow:
    latest = session.scalar(
        select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id)
    )
    row = VersionRow(
        model_id=model.id,
        version=(latest or 0) + 1,
        flavor=flavor,
        artifact_digest=digest,
        artifact_size=size,
        signature=signature.to_dict(),
        lineage=lineage.to_dict(),
        flavor_options=options,
        description=description,
        status="active",
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(row)
    session.flush()
    for key, value in lineage.tags.items():
        session.add(VersionTagRow(version_id=row.id, key=key, value=value))
    return row


def version_row(session: Session, model: ModelRow, version: int) -> VersionRow:
    row = session.scalars(
        select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.version == version)
    ).one_or_none()
    if row is None:
        raise VersionNotFound(
            f"model {model.name!r} has no version {version}", field="version"
        )
    return row


def resolve(session: Session, ref: ModelRef) -> tuple[ModelRow, VersionRow]:
    """The version a reference points at now: pinned, by alias, or the latest active one."""
    model = model_row(session, ref.model)
    if ref.version is not None:
        return model, version_row(session, model, ref.version)
    if ref.alias is not None:
        alias = session.scalars(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == ref.alias)
        ).one_or_none()
        if alias is None:
            raise AliasNotFound(
                f"model {ref.model!r} has no alias {ref.alias!r}", field="alias"
            )
        return model, session.get_one(VersionRow, alias.version_id)
    row = session.scalars(
        select(VersionRow)
        .where(VersionRow.model_id == model.id, VersionRow.status == "active")
        .order_by(VersionRow.version.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        raise VersionNotFound(f"model {ref.model!r} has no active version", field="model")
    return model, row


def aliases_by_version(session: Session, model_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(AliasRow.name, VersionRow.version)
        .join(VersionRow, VersionRow.id == AliasRow.version_id)
        .where(AliasRow.model_id == model_id)
        .order_by(AliasRow.name)
    )
    for name, version in rows:
        out.setdefault(version, []).append(name)
    return out


def to_version(model: ModelRow, row: VersionRow, aliases: list[str] | None = None) -> ModelVersion:
    return ModelVersion(
        model=model.name,
        version=row.version,
        flavor=row.flavor,
        artifact_digest=row.artifact_digest,
        artifact_size=row.artifact_size,
        signature=Signature.from_dict(row.signature),
        lineage=Lineage.from_dict(row.lineage),
        flavor_options=dict(row.flavor_options),
        description=row.description,
        status=row.status,
        created_at=row.created_at,
        created_by=row.created_by,
        aliases=tuple(aliases or ()),
        input_example=(row.input_example or {}).get("tensors"),
        project=model.project,
    )


def describe_version(session: Session, model: ModelRow, row: VersionRow) -> ModelVersion:
    return to_version(model, row, aliases_by_version(session, model.id).get(row.version))


def list_versions(session: Session, name: str, *, include_archived: bool = True
                  ) -> list[ModelVersion]:
    model = model_row(session, name)
    query = select(VersionRow).where(VersionRow.model_id == model.id)
    if not include_archived:
        query = query.where(VersionRow.status == "active")
    aliases = aliases_by_version(session, model.id)
    return [to_version(model, r, aliases.get(r.version))
            for r in session.scalars(query.order_by(VersionRow.version))]


def describe_model(session: Session, row: ModelRow) -> Model:
    latest = session.scalar(
        select(func.max(VersionRow.version)).where(VersionRow.model_id == row.id)
    )
    aliases = {
        name: version
        for name, version in session.execute(
            select(AliasRow.name, VersionRow.version)
            .join(VersionRow, VersionRow.id == AliasRow.version_id)
            .where(AliasRow.model_id == row.id)
        )
    }
    return Model(row.name, row.description, row.created_at, latest, aliases, row.project)


def project_of(session: Session, name: str) -> str | None:
    """The model's project, or None when there is no such model."""
    return session.scalars(select(ModelRow.project).where(ModelRow.name == name)).first()


def list_models(session: Session, tags: dict[str, str] | None = None) -> list[Model]:
    query = select(ModelRow).order_by(ModelRow.name)
    for key, value in (tags or {}).items():
        tagged = (
            select(VersionRow.model_id)
            .join(VersionTagRow, VersionTagRow.version_id == VersionRow.id)
            .where(VersionTagRow.key == key, VersionTagRow.value == value)
        )
        query = query.where(ModelRow.id.in_(tagged))
    return [describe_model(session, row) for row in session.scalars(query)]


def search_versions(session: Session, tags: dict[str, str]) -> list[ModelVersion]:
    query = select(ModelRow, VersionRow).join(VersionRow, VersionRow.model_id == ModelRow.id)
    for key, value in tags.items():
        tagged = select(VersionTagRow.version_id).where(
            VersionTagRow.key == key, VersionTagRow.value == value
        )
        query = query.where(VersionRow.id.in_(tagged))
    rows = session.execute(query.order_by(ModelRow.name, VersionRow.version)).all()
    return [describe_version(session, m, v) for m, v in rows]


def set_alias(session: Session, name: str, alias: str, version: int, actor: str) -> Alias:
    model = model_row(session, name, lock=True)
    target = version_row(session, model, version)
    if target.status != "active":
        raise VersionArchived(
            f"{name}:{version} is archived; an alias cannot point at it", field="version"
        )
    row = session.scalars(
        select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias)
    ).one_or_none()
    now = utcnow()
    previous: int | None = None
    if row is None:
        row = AliasRow(model_id=model.id, name=alias, version_id=target.id,
                       updated_by=actor, updated_at=now)
        session.add(row)
    else:
        previous = session.get_one(VersionRow, row.version_id).version
        row.version_id, row.updated_by, row.updated_at = target.id, actor, now
    session.add(AliasEventRow(model_id=model.id, alias=alias, from_version=previous,
                              to_version=version, actor=actor, at=now))
    return Alias(name, alias, version, actor, now)


def remove_alias(session: Session, name: str, alias: str, actor: str) -> None:
    model = model_row(session, name, lock=True)
    row = session.scalars(
        select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias)
    ).one_or_none()
    if row is None:
        raise AliasNotFound(f"model {name!r} has no alias {alias!r}", field="alias")
    previous = session.get_one(VersionRow, row.version_id).version
    session.delete(row)
    session.add(AliasEventRow(model_id=model.id, alias=alias, from_version=previous,
                              to_version=None, actor=actor, at=utcnow()))


def alias_history(session: Session, name: str) -> list[dict[str, Any]]:
    model = model_row(session, name)
    rows = session.scalars(
        select(AliasEventRow).where(AliasEventRow.model_id == model.id)
        .order_by(AliasEventRow.id)
    )
    return [{"alias": r.alias, "from_version": r.from_version, "to_version": r.to_version,
             "actor": r.actor, "at": r.at.isoformat()} for r in rows]


def archive_version(session: Session, name: str, version: int) -> VersionRow:
    model = model_row(session, name, lock=True)
    row = version_row(session, model, version)
    holders = session.scalars(
        select(AliasRow.name).where(AliasRow.version_id == row.id)
    ).all()
    if holders:
        raise InUse(
            f"{name}:{version} still carries the aliases {sorted(holders)}; move them first",
            field="version",
        )
    pinned = list(session.scalars(
        select(EndpointRow.name).where(EndpointRow.model_ref == f"{name}:{version}")
    ).all())
    pinned += [e for e, refs in composite_refs(session).items() if f"{name}:{version}" in refs]
    if pinned:
        raise InUse(f"{name}:{version} is served by endpoints {sorted(pinned)}",
                    field="version")
    row.status = "archived"
    return row


def composite_refs(session: Session) -> dict[str, set[str]]:
    """Model references each endpoint's graph nodes and traffic split (and shadows) name:
    these models are in use too, beyond the endpoint's own ``model_ref``."""
    out: dict[str, set[str]] = {}
    rows = session.execute(select(EndpointRow.name, EndpointRow.graph, EndpointRow.traffic)
                           .where((EndpointRow.graph.is_not(None)) |
                                  (EndpointRow.traffic.is_not(None))))
    for endpoint, graph, traffic in rows:
        refs = {node.get("model") for node in ((graph or {}).get("nodes") or {}).values()
                if isinstance(node, dict)}
        for part in ("split", "shadows"):
            refs |= {t.get("model") for t in (traffic or {}).get(part) or []
                     if isinstance(t, dict)}
        out[endpoint] = {r for r in refs if isinstance(r, str)}
    return out


def delete_model(session: Session, name: str) -> None:
    model = model_row(session, name, lock=True)
    users = list(session.scalars(
        select(EndpointRow.name).where(EndpointRow.model_name == name)
    ).all())
    users += [e for e, refs in composite_refs(session).items()
              if any(ModelRef.parse(r).model == name for r in refs)]
    if users:
        raise InUse(
            f"model {name!r} is served by endpoints {sorted(users)}; delete or repoint them "
            "first",
            field="model",
        )
    version_ids = select(VersionRow.id).where(VersionRow.model_id == model.id)
    session.execute(delete(VersionTagRow).where(VersionTagRow.version_id.in_(version_ids)))
    session.execute(delete(AliasRow).where(AliasRow.model_id == model.id))
    session.execute(delete(AliasEventRow).where(AliasEventRow.model_id == model.id))
    session.execute(delete(VersionRow).where(VersionRow.model_id == model.id))
    session.delete(model)


def projects_using(session: Session, digest: str) -> list[str]:
    return sorted(set(session.scalars(
        select(ModelRow.project).join(VersionRow, VersionRow.model_id == ModelRow.id)
        .where(VersionRow.artifact_digest == digest))))


def referenced_digests(session: Session) -> set[str]:
    return set(session.scalars(select(VersionRow.artifact_digest).distinct()))


def add_signature(session: Session, version: VersionRow, key_id: str, signature: str,
                  actor: str) -> dict[str, Any]:
    """Store a verified signature (one per key and version; a repeat replaces nothing)."""
    existing = session.scalars(select(VersionSignatureRow).where(
        VersionSignatureRow.version_id == version.id,
        VersionSignatureRow.key_id == key_id)).one_or_none()
    if existing is None:
        existing = VersionSignatureRow(version_id=version.id, key_id=key_id,
                                       algorithm="ed25519", signature=signature,
                                       added_by=actor, added_at=utcnow())
        session.add(existing)
        session.flush()
    return _signature_dict(existing)


def signatures(session: Session, version: VersionRow) -> list[dict[str, Any]]:
    rows = session.scalars(select(VersionSignatureRow)
                           .where(VersionSignatureRow.version_id == version.id)
                           .order_by(VersionSignatureRow.id))
    return [_signature_dict(r) for r in rows]


def _signature_dict(row: VersionSignatureRow) -> dict[str, Any]:
    return {"key_id": row.key_id, "algorithm": row.algorithm, "signature": row.signature,
            "added_by": row.added_by, "added_at": row.added_at.isoformat()}
