"""Model cards (Mitchell et al., 2019): what a version is for, what it is not for, what it
was trained and evaluated on, its limits, who owns it and how risky it is. Lineage fills
training data and metrics automatically; people fill the rest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.domain.limits import CARD_TEXT_MAX

RISK_LEVELS = ("minimal", "limited", "high", "unacceptable")
TEXT_FIELDS = ("intended_use", "out_of_scope_use", "training_data", "limitations")


@dataclass(frozen=True)
class ModelCard:
    intended_use: str = ""
    out_of_scope_use: str = ""
    training_data: str = ""
    limitations: str = ""
    owners: tuple[str, ...] = ()
    risk_level: str = ""
    evaluation: Mapping[str, float] = field(default_factory=dict)  # from lineage metrics

    def __post_init__(self) -> None:
        if self.risk_level and self.risk_level not in RISK_LEVELS:
            raise ValidationFailed(f"risk_level must be one of {', '.join(RISK_LEVELS)}",
                                   field="card.risk_level")
        for name in TEXT_FIELDS:
            if len(getattr(self, name)) > CARD_TEXT_MAX:
                raise ValidationFailed(f"{name} is longer than {CARD_TEXT_MAX} characters",
                                       field=f"card.{name}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in TEXT_FIELDS},
            "owners": list(self.owners),
            "risk_level": self.risk_level,
            "evaluation": dict(self.evaluation),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelCard:
        data = reject_unknown(data, {f.name for f in fields(cls)}, "card field", "card")
        for name in (*TEXT_FIELDS, "risk_level"):
            if name in data and not isinstance(data[name], str):
                raise ValidationFailed(f"{name} must be text", field=f"card.{name}")
        owners = data.get("owners", ())
        if isinstance(owners, str):
            owners = [o.strip() for o in owners.split(",") if o.strip()]
        if not isinstance(owners, list | tuple) or not all(isinstance(o, str) for o in owners):
            raise ValidationFailed("owners must be a list of names", field="card.owners")
        evaluation = data.get("evaluation") or {}
        if not isinstance(evaluation, Mapping):
            raise ValidationFailed("evaluation must map metric names to numbers",
                                   field="card.evaluation")
        try:
            evaluation = {str(k): float(v) for k, v in evaluation.items()}
        except (TypeError, ValueError) as exc:
            raise ValidationFailed("evaluation must map metric names to numbers",
                                   field="card.evaluation") from exc
        return cls(**{**{k: v for k, v in data.items() if k in (*TEXT_FIELDS, "risk_level")},
                      "owners": tuple(owners), "evaluation": evaluation})

    def merged(self, changes: Mapping[str, Any]) -> ModelCard:
        return ModelCard.from_dict({**self.to_dict(), **changes})

    def with_lineage(self, lineage: Any) -> ModelCard:
        """Training data and metrics from lineage where the card says nothing."""
        training = self.training_data or (
            f"data fingerprint {lineage.data_fingerprint}" if lineage.data_fingerprint else "")
        return replace(self, training_data=training,
                       evaluation={**lineage.metrics, **self.evaluation})

    def missing(self, required: tuple[str, ...]) -> list[str]:
        return [name for name in required if not getattr(self, name, None)]

    def markdown(self, title: str, lineage: Any = None) -> str:
        def block(heading: str, text: str) -> list[str]:
            return [f"## {heading}", "", text or "_not stated_", ""]

        lines = [f"# Model card: {title}", ""]
        lines += [f"**Owners:** {', '.join(self.owners) or '_not stated_'}  ",
                  f"**Risk level:** {self.risk_level or '_not stated_'}", ""]
        lines += block("Intended use", self.intended_use)
        lines += block("Out-of-scope use", self.out_of_scope_use)
        lines += block("Training data", self.training_data)
        lines += ["## Evaluation", ""]
        lines += ["| metric | value |", "|---|---|"] + [
            f"| {k} | {v:.4g} |" for k, v in sorted(self.evaluation.items())
        ] if self.evaluation else ["_no metrics recorded_"]
        lines += ["", *block("Limitations", self.limitations)]
        if lineage is not None:
            lines += ["## Lineage", "",
                      f"- code revision: {lineage.code_revision or '-'}",
                      f"- parent version: {lineage.parent or '-'}",
                      f"- parameters: {dict(lineage.params) or '-'}",
                      f"- trusted code or pickles: {'yes' if lineage.trusted else 'no'}", ""]
        return "\n".join(lines)
