"""The online loop on one machine (``rlmec demo``): the platform's processes on loopback
(:mod:`.stack`), what each stage is doing (:mod:`.monitor`), a live view (:mod:`.display`), and
the summary and plot at the end (:mod:`.report`). Imports ``shared`` and ``evaluation``."""
