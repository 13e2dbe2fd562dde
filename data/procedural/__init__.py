"""Procedural tasks beside ``arith``, made to separate the credit methods (issue 42).

- :mod:`.lines`: K independent equations a problem; a solution can hold several slips, and
  none propagates. Per-line accuracy gives K trials a problem.
- :mod:`.paths`: a sum whose partial sums may come in any order; the minimal edit of the
  policy's own order is not the reference.

Each task module holds its problems, its per-line check and its exact teacher; :mod:`.base`
holds what they share (knobs on the task name, the equation line, the teacher's record flow);
:mod:`.registry` names them for ``rlmec data distill --teacher`` and the task table.
"""
