"""A grant names its project as the project is named: upper case included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.governance.policy import Principal, parse_grant


def test_a_project_with_upper_case_can_be_granted(yard: Yard) -> None:
    yard.create_project("Fraud")
    created = yard.create_key("fraud-team", ["developer@Fraud"])
    assert created["roles"] == ["developer@Fraud"]
    team = Yard(settings=yard.settings,
                principal=Principal("fraud-team", frozenset(created["roles"])))
    try:
        x = np.arange(8, dtype=np.float32).reshape(4, 2)
        version = team.register("scorer", LogisticRegression().fit(x, [0, 1, 0, 1]),
                                project="Fraud", sample=x)
        assert version.ref == "scorer:1"
    finally:
        team.close()


@pytest.mark.parametrize("grant", ["developer@", "developer@-x", "Developer@Fraud",
                                   "developer@a b"])
def test_malformed_grants_are_refused(grant: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_grant(grant)
