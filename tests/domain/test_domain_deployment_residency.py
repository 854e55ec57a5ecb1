"""The deployment settings of lazy loading and retries (docs/decisions/0021)."""

from __future__ import annotations

import pytest

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ValidationFailed


def test_load_and_idempotent_default_to_eager_and_retried() -> None:
    spec = DeploymentSpec()
    assert (spec.load, spec.idempotent) == ("eager", True)
    lazy = DeploymentSpec.from_dict({"load": "lazy", "idempotent": False})
    assert (lazy.load, lazy.idempotent) == ("lazy", False)
    assert DeploymentSpec.from_dict(lazy.to_dict()) == lazy


@pytest.mark.parametrize(("changes", "field"), [
    ({"load": "later"}, "deployment.load"),
    ({"idempotent": "yes"}, "deployment.idempotent"),
])
def test_bad_values_name_their_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        DeploymentSpec.from_dict(changes)
    assert caught.value.field == field
