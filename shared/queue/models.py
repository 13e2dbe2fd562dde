"""Deprecated name of :mod:`rlmec.shared.queue.schemas` (0.1); removed in the next release."""

import warnings

from rlmec.shared.queue.schemas import *  # noqa: F403

warnings.warn(
    "rlmec.shared.queue.models is deprecated; import from rlmec.shared.queue.schemas",
    DeprecationWarning,
    stacklevel=2,
)
