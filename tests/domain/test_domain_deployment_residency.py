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


def test_autoscaling_takes_ray_serves_delays() -> None:
    spec = DeploymentSpec.from_dict({"autoscaling": {
        "min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 2, "downscale_delay_s": 60,
        "look_back_period_s": 5}})
    assert spec.autoscaling["upscale_delay_s"] == 2
    for key, value in (("upscale_delay_s", -1), ("downscale_delay_s", 7200),
                       ("look_back_period_s", 0), ("upscale_delay_s", float("nan"))):
        with pytest.raises(ValidationFailed) as info:
            DeploymentSpec.from_dict({"autoscaling": {"max_replicas": 2, key: value}})
        assert info.value.field == f"deployment.autoscaling.{key}"
