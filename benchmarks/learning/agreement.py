"""How far the platform GRM's token rewards are from the exact teacher's on the learning
benchmark's one sample set: what ``GRM vs exact teacher`` costs, token by token.

Both files are ``rlmec train`` records of the same samples (``train_exact.jsonl`` from the
exact teacher, ``train_grm.jsonl`` from the served GRM). On a wrong sample a token is
*penalised* when its reward is below 0 (§3.1); the exact teacher penalises exactly the tokens
its minimal rewrite does not keep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    """Scored rows by id, ``rewards`` as a list of values: the trainer's records hold a list,
    the service's results (``rlmec data signals``) a TokenValues object, or None if unscored."""
    out = {}
    for line in path.open():
        r = json.loads(line) if line.strip() else {}
        values = r.get("rewards")
        if isinstance(values, dict):
            values = values["values"]
        if values is not None:
            out[r["id"]] = {**r, "rewards": values}
    return out


def agreement(exact: Path, grm: Path) -> dict[str, Any]:
    """Per-token agreement of the two reward files on the samples both scored.

    Returns counts, the share of wrong samples with the same rewrite, the GRM's precision and
    recall of the exact penalised tokens, the mean absolute reward difference per token, and
    the mean reward mass (sum of rewards) of each side on wrong and on correct samples.
    """
    a, b = _rows(exact), _rows(grm)
    both = [i for i in a if i in b and len(a[i]["rewards"]) == len(b[i]["rewards"])]
    wrong = [i for i in both if not a[i]["correct"]]
    right = [i for i in both if a[i]["correct"]]
    tp = fp = fn = 0
    abs_diff, tokens = 0.0, 0
    for i in both:
        for x, y in zip(a[i]["rewards"], b[i]["rewards"], strict=True):
            abs_diff += abs(x - y)
            tokens += 1
            if i in wrong:
                tp += x < 0 and y < 0
                fp += x >= 0 and y < 0
                fn += x < 0 and y >= 0
    same = sum(a[i]["regular_sequence"] == b[i]["regular_sequence"] for i in wrong)
    return {
        "samples": len(both),
        "only_exact": len(set(a) - set(b)),
        "only_grm": len(set(b) - set(a)),
        "other_length": len([i for i in a if i in b]) - len(both),
        "wrong": len(wrong),
        "same_rewrite": same / max(len(wrong), 1),
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "mean_abs_diff": abs_diff / max(tokens, 1),
        "mass_wrong": {k: _mass(s, wrong) for k, s in (("exact", a), ("grm", b))},
        "mass_correct": {k: _mass(s, right) for k, s in (("exact", a), ("grm", b))},
    }


def _mass(rows: dict[str, dict[str, Any]], ids: list[str]) -> float:
    return sum(sum(rows[i]["rewards"]) for i in ids) / max(len(ids), 1)


def agreement_line(v: dict[str, Any]) -> str:
    return (
        f"GRM against the exact teacher on the {v['samples']} samples both scored "
        f"({v['only_exact']} only by the teacher, {v['only_grm']} only by the GRM, "
        f"{v['other_length']} of another length): on the "
        f"{v['wrong']} wrong ones, the same rewrite {100 * v['same_rewrite']:.1f}%, penalised "
        f"tokens precision {100 * v['precision']:.1f}% and recall {100 * v['recall']:.1f}%; "
        f"mean |reward difference| per token {v['mean_abs_diff']:.3f}; reward per sample "
        f"(sum over tokens) on wrong samples {v['mass_wrong']['exact']:.2f} (teacher) vs "
        f"{v['mass_wrong']['grm']:.2f} (GRM), on correct ones {v['mass_correct']['exact']:.2f} "
        f"vs {v['mass_correct']['grm']:.2f}."
    )


if __name__ == "__main__":
    import sys

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/learning")
    print(agreement_line(agreement(work / "train_exact.jsonl", work / "train_grm.jsonl")))
