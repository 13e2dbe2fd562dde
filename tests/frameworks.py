"""The RL frameworks' own HTTP clients, copied from their repositories, so tests and
benchmarks post to the reward service exactly as the frameworks do."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import requests


async def openrlhf_post(url: str, data: dict[str, Any], try_max_times: int = 5) -> Any:
    """OpenRLHF's current client, as in ``openrlhf/utils/agent.py``
    (``SingleTurnAgentExecutor._fetch_rewards_via_http._post_request``, 2026-08): a new session
    per try, 180 s timeout, 5 tries 1 s apart, any error swallowed (OpenRLHF then raises,
    catches it in ``execute()`` and keeps the reward ``None``; here: returns None)."""
    timeout = aiohttp.ClientTimeout(total=180)
    for _ in range(try_max_times):
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:  # noqa: SIM117 (as OpenRLHF writes it)
                async with session.post(url, json=data) as response:
                    response.raise_for_status()
                    return await response.json()
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(1)
    return None


def openrlhf_2025_post(url: str, data: dict[str, Any], try_max_times: int = 5) -> Any:
    """OpenRLHF's 2025 client, as in ``openrlhf/utils/remote_rm_utils.py``
    (``request_api_wrapper`` before 2026-01): ``requests``, 180 s timeout, 5 tries 1 s apart."""
    headers = {"Content-Type": "application/json"}
    for _ in range(try_max_times):
        try:
            response = requests.post(url=url, json=data, headers=headers, timeout=180)
            response.raise_for_status()
            return response.json()
        except requests.RequestException:
            pass
        time.sleep(1)
    return None
