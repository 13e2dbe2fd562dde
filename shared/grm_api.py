"""Deprecated name of :mod:`rlmec.shared.grm_schemas` (0.1); removed in the next release."""

import warnings

from rlmec.shared.grm_schemas import *  # noqa: F403

warnings.warn(
    "rlmec.shared.grm_api is deprecated; import from rlmec.shared.grm_schemas",
    DeprecationWarning,
    stacklevel=2,
)
