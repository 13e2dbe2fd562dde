"""How often the false-equation check (``RewardParams.check_equations``) fires on correct
solutions: the shipped GSM8K reference solutions, test and train (issue 42, item 6; target at
most 0.5%). Each hit is a reference a rewrite could copy and lose its sample for.

    .venv/bin/python -m benchmarks.grm_quality.equations [--show 10] [--no-write]
"""

from __future__ import annotations

import argparse

from benchmarks.report import set_line, stamp
from rlmec.data.tasks import load_task
from rlmec.shared.equations import false_equation

TASKS = ("gsm8k", "gsm8k_train")
PREFIX = "false-equation check on GSM8K references:"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--show", type=int, default=10, help="hits to print")
    p.add_argument("--no-write", action="store_true", help="print; leave BENCHMARKS.md")
    args = p.parse_args()
    problems = [p for task in TASKS for p in load_task(task)]
    hits = [(p.id, bad) for p in problems if (bad := false_equation(p.reference_solution))]
    for pid, bad in hits[: args.show]:
        print(f"{pid}: {bad!r}")
    rate = 100 * len(hits) / len(problems)
    line = (
        f"`{PREFIX} fires on {len(hits)} of {len(problems)} ({rate:.2f}%)` (target at most "
        f"0.5%: {'met' if rate <= 0.5 else 'NOT met'}; the hits are slips in GSM8K's own "
        f"references and unit conventions, e.g. "
        + ", ".join(f"{bad!r} in {pid}" for pid, bad in hits[:3])
        + "). "
        + stamp("python -m benchmarks.grm_quality.equations")
    )
    print(line)
    if not args.no_write:
        set_line("grm_quality", PREFIX, line)


if __name__ == "__main__":
    main()
