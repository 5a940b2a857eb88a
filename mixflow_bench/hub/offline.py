"""Offline mode: one switch, honoured by every command, for compute nodes without a network.

``MIXFLOW_BENCH_OFFLINE=1`` (or ``mixflow-bench --offline …``, or Hugging Face's own ``HF_HUB_OFFLINE=1``) makes
every artifact come from the cache and never opens a connection; turning it on also sets ``HF_HUB_OFFLINE`` so
that transformers / diffusers stay offline as well, in this process and in the processes it starts.
"""

from __future__ import annotations

import os

OFFLINE_ENV = "MIXFLOW_BENCH_OFFLINE"
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_mode() -> bool:
    """Whether downloads are off (``MIXFLOW_BENCH_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on)."""
    return _flag(OFFLINE_ENV) or _flag(HF_OFFLINE_ENV)


def set_offline() -> None:
    """Turn offline mode on for this process and its children (both switches, and huggingface_hub's constant)."""
    os.environ[OFFLINE_ENV] = "1"
    os.environ[HF_OFFLINE_ENV] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: its flag was read at import time
        constants.HF_HUB_OFFLINE = True
