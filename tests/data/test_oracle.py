"""Oracle signals: a teacher's rewrite scored as a certain GRM would; the trainer reads them and
every objective finds what it needs in them."""

from __future__ import annotations

from pathlib import Path

from rlmec.data.arith_teacher import teach
from rlmec.data.oracle import oracle_record
from rlmec.data.records import GrmRecord
from rlmec.trainer.data import PolicyEncoder, parse_record
from rlmec.trainer.objectives import OBJECTIVES, prepare_samples

Q, REF = "Calculate 17 + 21 - 31.", "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"


def _record(prediction: str, correct: bool) -> GrmRecord:
    r = GrmRecord(id="arith_train/0#0", task="arith_train", task_type="math", question=Q,
                  reference_solution=REF, reference_answer="7", prediction=prediction,
                  correct=correct)  # fmt: skip
    return r if correct else teach(r)


def test_a_wrong_sample_is_penalised_where_the_rewrite_changes_it(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    wrong = "17 + 21 = 38\n38 - 31 = 9\nThe answer is: 9"
    row = oracle_record(_record(wrong, False), tok)
    assert row is not None and row["regular_sequence"] == REF and row["correct"] is False
    enc = tok(wrong, add_special_tokens=False, return_offsets_mapping=True)
    penalised = [(a, b) for (a, b), r in zip(enc["offset_mapping"], row["rewards"], strict=False)
                 if r < 0]  # fmt: skip
    # the right first step and the start of the second are never penalised; the wrong digits are
    first_wrong = wrong.index("9")
    assert penalised and all(b > first_wrong - 1 for _, b in penalised)
    assert any(wrong[a:b].strip() == "9" for a, b in penalised)
    assert set(row["rewards"]) == {-0.1, 0.0} and row["rewards"][-1] == 0.0  # EOS kept
    assert max(row["imitation_weights"]) == 1.0 and min(row["imitation_weights"]) == 0.5


def test_correct_samples_get_the_cap_and_unscorable_ones_nothing(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = oracle_record(_record(REF, True), tok)
    assert row is not None and set(row["rewards"]) == {0.5}
    assert set(row["imitation_weights"]) == {0.5} and row["regular_sequence"] == REF
    assert oracle_record(_record("no idea", False), tok) is None  # the teacher dropped it


def test_the_trainer_reads_them_for_every_objective(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    enc = PolicyEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), 256)
    rows = [oracle_record(_record(p, p == REF), enc.tokenizer)
            for p in (REF, "17 + 21 = 39\n39 - 31 = 8\nThe answer is: 8")]  # fmt: skip
    samples = [parse_record(r, enc) for r in rows]
    assert all(s is not None for s in samples)
    for name in OBJECTIVES:
        assert len(prepare_samples([s for s in samples if s is not None], name)) == 2


def test_the_share_of_right_lines_is_the_partial_credit() -> None:
    from rlmec.data.oracle import partial_credit

    q = "Compute each: 47 + 38; 91 - 26."
    lines = GrmRecord(id="lines_train:k=2/0#0", task="lines_train:k=2", task_type="math",
                      question=q, reference_solution="", reference_answer="85; 65",
                      prediction="47 + 38 = 85\n91 - 26 = 64\nThe answer is: 85; 64",
                      correct=False)  # fmt: skip
    assert partial_credit(lines) == 0.5
    assert partial_credit(_record(REF, True)) == 1.0  # arith has no lines: the outcome
    assert partial_credit(_record("17 + 21 = 39\n39 - 31 = 8\nThe answer is: 8", False)) == 0.0
