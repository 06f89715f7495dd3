#!/usr/bin/env python3
"""Side-by-side fraud metrics: gold, scikit-learn's IsolationForest on the
same exported features, and the seed notebooks' CASE WHEN rule.

Usage: fraud_baseline.py EXPORT_DIR   (claims.csv and providers.csv from
`gold evaluate --export-features EXPORT_DIR`)
"""
import csv
import json
import sys
from collections import defaultdict

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

CLAIM_META = ["claim_id", "provider_id", "amount", "status", "label", "pattern", "gold_score"]
PROVIDER_META = ["provider_id", "label", "pattern", "gold_score"]


def load(path, meta):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0].keys() if c not in meta and not c.startswith(("percentile_", "tail_"))]
    x = np.array([[float(r[c]) for c in features] for r in rows])
    return rows, features, x


def seed_rule(amount, status):
    # The seeds' fraud score, verbatim.
    if amount > 5000:
        return 0.9
    if status == "REJECTED" and amount > 1000:
        return 0.8
    return 0.1


def metrics(scores, labels, patterns):
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    k = int(labels.sum())
    # Ties broken by row order, as gold evaluate does.
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    top = set(order.tolist())
    recall = {}
    for name in sorted({p for ps in patterns for p in ps}):
        idx = [i for i, ps in enumerate(patterns) if name in ps]
        recall[name] = sum(1 for i in idx if i in top) / len(idx)
    return {
        "roc_auc": roc_auc_score(labels, scores),
        "average_precision": average_precision_score(labels, scores),
        "precision_at_k": sum(labels[i] for i in order) / k,
        "k": k,
        "recall_at_k": recall,
    }


def main():
    out = sys.argv[1]
    claims, cf, cx = load(f"{out}/claims.csv", CLAIM_META)
    providers, pf, px = load(f"{out}/providers.csv", PROVIDER_META)
    c_labels = [int(r["label"]) for r in claims]
    c_patterns = [[r["pattern"]] if r["pattern"] else [] for r in claims]
    p_labels = [int(r["label"]) for r in providers]
    p_patterns = [r["pattern"].split(";") if r["pattern"] else [] for r in providers]

    results = {}
    # gold: the scores gold wrote.
    results[("claims", "gold")] = metrics([float(r["gold_score"] or 0) for r in claims], c_labels, c_patterns)
    results[("providers", "gold")] = metrics([float(r["gold_score"] or 0) for r in providers], p_labels, p_patterns)
    # Isolation Forest on the same features.
    for level, x, labels, patterns in [("claims", cx, c_labels, c_patterns), ("providers", px, p_labels, p_patterns)]:
        forest = IsolationForest(n_estimators=200, random_state=0).fit(x)
        results[(level, "isolation_forest")] = metrics(-forest.score_samples(x), labels, patterns)
    # The seed rule; a provider gets the mean of its claims' rule scores.
    rule = [seed_rule(float(r["amount"]), r["status"]) for r in claims]
    results[("claims", "seed_rule")] = metrics(rule, c_labels, c_patterns)
    by_provider = defaultdict(list)
    for r, s in zip(claims, rule):
        by_provider[r["provider_id"]].append(s)
    results[("providers", "seed_rule")] = metrics(
        [float(np.mean(by_provider.get(r["provider_id"], [0.1]))) for r in providers], p_labels, p_patterns
    )

    print(f"claims: {len(claims)} ({sum(c_labels)} fraud); providers: {len(providers)} ({sum(p_labels)} fraud)")
    print()
    print(f"| level | method | ROC-AUC | average precision | precision@k (k) | lowest pattern recall@k |")
    print(f"|---|---|---|---|---|---|")
    for (level, method), m in results.items():
        low = min(m["recall_at_k"].items(), key=lambda kv: kv[1])
        print(
            f"| {level} | {method} | {m['roc_auc']:.3f} | {m['average_precision']:.3f} | "
            f"{m['precision_at_k']:.3f} ({m['k']}) | {low[1]:.2f} ({low[0]}) |"
        )
    print()
    patterns = sorted({p for m in results.values() for p in m["recall_at_k"]})
    print("recall within the top k, per pattern:")
    print()
    print("| pattern | " + " | ".join(f"{lv} {me}" for lv, me in results) + " |")
    print("|---|" + "---|" * len(results))
    for p in patterns:
        cells = [f"{m['recall_at_k'].get(p, float('nan')):.2f}" for m in results.values()]
        print(f"| {p} | " + " | ".join(cells) + " |")
    with open(f"{out}/baseline.json", "w") as f:
        json.dump({f"{lv}/{me}": m for (lv, me), m in results.items()}, f, indent=2)


if __name__ == "__main__":
    main()
