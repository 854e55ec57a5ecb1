"""Generated customer data and the two demo models trained on it (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = ["tenure_months", "monthly_charges", "support_calls", "contract_months",
            "late_payments", "num_products"]


@dataclass(frozen=True)
class Customers:
    x: np.ndarray  # float32, one row per customer, columns FEATURES
    churned: np.ndarray  # int64 0/1
    lifetime_value: np.ndarray  # float64


def make_customers(n: int = 4000, seed: int = 11) -> Customers:
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 12.0, n)
    charges = rng.normal(70, 20, n).clip(15, 150)
    calls = rng.poisson(1.5, n)
    contract = rng.choice([1, 12, 24], size=n, p=[0.5, 0.3, 0.2])
    late = rng.poisson(0.6, n)
    products = rng.integers(1, 5, n)
    x = np.column_stack([tenure, charges, calls, contract, late, products]).astype(np.float32)
    logit = (-0.06 * tenure + 0.02 * charges + 0.45 * calls - 0.08 * contract + 0.5 * late
             - 0.3 * products - 0.5)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    value = (charges * np.minimum(tenure + contract, 72) * (1 + 0.15 * products)
             - 40 * late + rng.normal(0, 150, n))
    return Customers(x, churned, value.astype(np.float64))


def train(data: Customers) -> dict[str, Any]:
    """A churn classifier and a lifetime-value regression, with held-out metrics."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te, c_tr, c_te, v_tr, v_te = train_test_split(
        data.x, data.churned, data.lifetime_value, test_size=0.25, random_state=0)
    churn = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    churn.fit(x_tr, c_tr)
    proba = churn.predict_proba(x_te)[:, 1]
    ltv = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x_tr, v_tr)
    pred = ltv.predict(x_te)
    return {
        "churn": churn,
        "churn_metrics": {"accuracy": float(accuracy_score(c_te, proba > 0.5)),
                          "roc_auc": float(roc_auc_score(c_te, proba))},
        "ltv": ltv,
        "ltv_metrics": {"mae": float(mean_absolute_error(v_te, pred)),
                        "r2": float(r2_score(v_te, pred))},
    }
