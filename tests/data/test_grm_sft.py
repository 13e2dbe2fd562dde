"""GRM SFT examples: the identity rate is the released code's (issue 26, item 9)."""

from __future__ import annotations

from rlmec.data.grm_sft import build_examples
from rlmec.data.records import GrmRecord


def _record(i: int, *, correct: bool) -> GrmRecord:
    wrong = {"error_step": 0, "rewrite": "1 + 1 = 2\nThe answer is: 2"}
    return GrmRecord(
        id=f"r{i}", task="arith_train", task_type="math", question="Calculate 1 + 1.",
        reference_solution="1 + 1 = 2\nThe answer is: 2", reference_answer="2",
        prediction="1 + 1 = 2\nThe answer is: 2" if correct else "1 + 1 = 3\nThe answer is: 3",
        correct=correct, **({} if correct else wrong),
    )  # fmt: skip


def test_identity_rate_is_accepted_over_all_records() -> None:
    # 200 accepted of 200 wrong, 100 correct: the released gen_grm_data_math.py samples the
    # correct ones at num_accepted / len(all records) = 200 / 300, not 200 / 200.
    records = [_record(i, correct=False) for i in range(200)]
    records += [_record(200 + i, correct=True) for i in range(100)]
    examples, stats = build_examples(records, seed=0)
    assert stats.identity_rate == 200 / 300
    identities = sum(e.kind == "identity" for e in examples)
    assert identities == stats.identity and 50 <= identities <= 82  # ~67, never all 100
