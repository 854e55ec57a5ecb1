from modelyard import Yard


def test_register_and_alias(yard: Yard, classifier, tabular) -> None:
    x, _, _ = tabular
    v = yard.register("churn", classifier, sample=x[:3])
    assert v.version == 1
    yard.set_alias("churn", "champion", 1)
    assert yard.version("churn@champion").version == 1
