"""PNG plots of long runs: training curves (``rlmec plot RUN_DIR``, written by ``rlmec train``
and ``rlmec grm train`` at the end) and ``rlmec eval compare --plot``. matplotlib only."""
