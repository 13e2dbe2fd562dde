"""The token-rewards contract (``docs/token-rewards-contract.md``): its version and JSON Schema.

The schema is generated from the response models (:class:`TokenRewardsResponse`), so it cannot
drift from what the service sends; the committed copy, ``docs/token-rewards-contract.schema.json``,
is what other frameworks read. ``tests/shared/test_contract.py`` fails when the two differ
(regenerate with ``python -m rlmec.shared.contract > docs/token-rewards-contract.schema.json``
and bump :data:`CONTRACT_VERSION` by the stability rules), and the service's responses are
validated against the committed copy.
"""

from __future__ import annotations

import json
from typing import Any

from rlmec.shared.schemas import TokenRewardsResponse

# major.minor: within a major version, changes are additive only (new optional fields, new
# unscored reasons); anything a consumer could break on is a new major version.
CONTRACT_VERSION = "1.3"
SCHEMA_ID = "urn:rlmec:token-rewards:1"  # one id per major version


def contract_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a ``POST /v1/token-rewards`` (and rollout result) body.

    Open to unknown fields (the models forbid them on input, not the contract on output): a
    consumer of version 1.0 must accept a 1.1 body that adds one."""
    schema = _open(TokenRewardsResponse.model_json_schema())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "rlmec token rewards",
        "description": f"Contract version {CONTRACT_VERSION}: docs/token-rewards-contract.md.",
        "x-contract-version": CONTRACT_VERSION,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _open(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if k != "additionalProperties" or v}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node


if __name__ == "__main__":
    print(json.dumps(contract_schema(), indent=2, sort_keys=True))
