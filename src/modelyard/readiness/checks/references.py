"""The published rubrics the checks stand on, cited by item so a reader can look each up.

- Breck, Cai, Nielsen, Salib, Sculley: "The ML Test Score: A Rubric for ML Production
  Readiness and Technical Debt Reduction", IEEE Big Data 2017 (tests Data/Model/Infra/Monitor
  1-7).
- Beyer, Jones, Petoff, Murphy: "Site Reliability Engineering", O'Reilly 2016 (the SRE book).
- Beyer, Murphy, Rensin, Kawahara, Thorne: "The Site Reliability Workbook", O'Reilly 2018.
- Mitchell et al.: "Model Cards for Model Reporting", FAT* 2019.
- NIST SP 800-53 Rev. 5, "Security and Privacy Controls for Information Systems and
  Organizations" (2020).
- NIST SP 800-218, "Secure Software Development Framework (SSDF) 1.1" (2022).
- OWASP API Security Top 10, 2023 edition.
- KServe / Triton "Open Inference Protocol" (V2 inference protocol).
- Crankshaw et al.: "Clipper: A Low-Latency Online Prediction Serving System", NSDI 2017.
"""

from __future__ import annotations

MLTS = "ML Test Score (Breck et al., 2017)"
SRE = "SRE book (Beyer et al., 2016)"
WORKBOOK = "SRE workbook (Beyer et al., 2018)"

DATA_1 = f"{MLTS}, Data 1: feature expectations are captured in a schema"
DATA_5 = f"{MLTS}, Data 5: the data pipeline has appropriate privacy controls"
INFRA_1 = f"{MLTS}, Infra 1: training is reproducible"
INFRA_3 = f"{MLTS}, Infra 3: the full ML pipeline is integration tested"
INFRA_4 = f"{MLTS}, Infra 4: model quality is validated before attempting to serve it"
INFRA_6 = f"{MLTS}, Infra 6: models are tested via a canary process before production"
INFRA_7 = f"{MLTS}, Infra 7: models can be quickly and safely rolled back"
MONITOR_2 = f"{MLTS}, Monitor 2: data invariants hold in training and serving inputs"
MONITOR_4 = f"{MLTS}, Monitor 4: models are not too stale"
MONITOR_6 = (f"{MLTS}, Monitor 6: no dramatic or slow-leak regressions in serving latency "
             "or throughput")
MONITOR_7 = f"{MLTS}, Monitor 7: no regression in prediction quality on served data"

SRE_SLO = f"{SRE}, ch. 4 Service Level Objectives; {WORKBOOK}, ch. 2 Implementing SLOs"
SRE_ALERTING = f"{WORKBOOK}, ch. 5 Alerting on SLOs"
SRE_CASCADING = f"{SRE}, ch. 22 Addressing Cascading Failures (deadlines, degradation)"
SRE_TESTING = f"{SRE}, ch. 17 Testing for Reliability (load and capacity tests)"
SRE_INTEGRITY = f"{SRE}, ch. 26 Data Integrity"
SRE_PRR = f"{SRE}, ch. 32 The Evolving SRE Engagement Model (production readiness review)"
SRE_CANARY = f"{WORKBOOK}, ch. 16 Canarying Releases"

MODEL_CARDS = "Model Cards for Model Reporting (Mitchell et al., 2019)"
NIST_AC6 = "NIST SP 800-53 Rev. 5 AC-6 (least privilege), AC-2(3) (disable inactive accounts)"
NIST_AC5 = "NIST SP 800-53 Rev. 5 AC-5 (separation of duties), CM-3 (change control)"
NIST_AU9 = "NIST SP 800-53 Rev. 5 AU-9 (protection of audit information)"
SSDF_PS2 = "NIST SP 800-218 (SSDF) PS.2: provide a mechanism to verify release integrity"
OWASP_API2 = "OWASP API Security Top 10 (2023), API2: Broken Authentication"
OIP = "Open Inference Protocol (KServe/Triton V2)"
CLIPPER = "Clipper (Crankshaw et al., NSDI 2017): adaptive batching"
