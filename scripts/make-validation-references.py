#!/usr/bin/env python3
"""References for the validator's statistics (shared/validate), computed by
SciPy and scikit-learn, never by our code: two real classifiers on
scikit-learn's bundled breast-cancer data (a logistic regression, and a
deliberately worse depth-1 tree), their per-example correctness on a fixed
held-out split, and what SciPy says of the comparison.

    PYTHONPATH=.cache/mlmesh/py/modelgen python3 scripts/make-validation-references.py

(packages: scripts/modelgen.txt). Writes shared/validate/tests/data/references.json.
"""

import json
import os

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.5, random_state=7, stratify=y)

good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
worse = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)
good_ok = (good.predict(X_test) == y_test)
worse_ok = (worse.predict(X_test) == y_test)
# Per-example log-likelihood of the true class: a continuous metric.
good_ll = np.log(np.clip(good.predict_proba(X_test)[np.arange(len(y_test)), y_test], 1e-12, 1))
worse_ll = np.log(np.clip(worse.predict_proba(X_test)[np.arange(len(y_test)), y_test], 1e-12, 1))


def bootstrap(a, b, confidence):
    r = stats.bootstrap(
        (a, b),
        lambda u, v, axis=-1: np.mean(u - v, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        confidence_level=confidence,
        n_resamples=9999,
        random_state=0,
    )
    return {"low": float(r.confidence_interval.low), "high": float(r.confidence_interval.high)}


def mcnemar(cand, champ):
    b = int(np.sum(cand & ~champ))
    c = int(np.sum(~cand & champ))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p_value": p}


def mdd(d, alpha, power):
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * np.std(d, ddof=1) / np.sqrt(len(d)))


cases = []
for name, cand, champ in [
    ("accuracy: logistic regression vs depth-1 tree", good_ok.astype(float), worse_ok.astype(float)),
    ("accuracy: depth-1 tree vs logistic regression", worse_ok.astype(float), good_ok.astype(float)),
    ("log-likelihood: logistic regression vs depth-1 tree", good_ll, worse_ll),
]:
    cases.append({
        "name": name,
        "candidate": [float(x) for x in cand],
        "champion": [float(x) for x in champ],
        "mean_difference": float(np.mean(cand - champ)),
        "bootstrap_95": bootstrap(cand, champ, 0.95),
        "bootstrap_90": bootstrap(cand, champ, 0.90),
        "mdd_alpha05_power80": mdd(cand - champ, 0.05, 0.8),
    })

from sklearn.metrics import accuracy_score

# The two models' answers as a served classifier gives them (class
# probabilities per example), the labels, and scikit-learn's accuracy.
answers = {
    "labels": [int(v) for v in y_test],
    "good_probabilities": [[float(p) for p in row] for row in good.predict_proba(X_test)],
    "worse_probabilities": [[float(p) for p in row] for row in worse.predict_proba(X_test)],
    "good_accuracy": float(accuracy_score(y_test, good.predict(X_test))),
    "worse_accuracy": float(accuracy_score(y_test, worse.predict(X_test))),
}

out = {
    "generator": f"scripts/make-validation-references.py (scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__})",
    "bootstrap_resamples": 9999,
    "cases": cases,
    "mcnemar": [
        {"name": "logistic regression vs depth-1 tree", **mcnemar(good_ok, worse_ok)},
        {"name": "small counts", **{"b": 3, "c": 11, "p_value": float(stats.binomtest(3, 14, 0.5).pvalue)}},
        {"name": "balanced", **{"b": 7, "c": 7, "p_value": float(stats.binomtest(7, 14, 0.5).pvalue)}},
        {"name": "large", **{"b": 480, "c": 560, "p_value": float(stats.binomtest(480, 1040, 0.5).pvalue)}},
        {"name": "none discordant", "b": 0, "c": 0, "p_value": 1.0},
    ],
    "classifier_answers": answers,
    "normal_quantiles": [[p, float(stats.norm.ppf(p))] for p in [1e-10, 1e-4, 0.01, 0.025, 0.05, 0.2, 0.5, 0.8, 0.95, 0.975, 0.99, 0.9999]],
}
path = os.path.join(os.path.dirname(__file__), "..", "shared", "validate", "tests", "data", "references.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote {path}: {len(good_ok)} held-out examples, accuracy {good_ok.mean():.3f} vs {worse_ok.mean():.3f}")
