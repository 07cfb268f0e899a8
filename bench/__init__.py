"""Benchmarks that print tables: our training and decoding speed against a hand-written seq2seq
and the peer toolkits (OpenNMT-py, JoeyNMT, fairseq), time to a BLEU, serving under load, memory
as data grows, multi-process scaling and the GPU. One module each, run from the repository root
as ``python -m bench.NAME`` (``--help`` for its options). Each peer toolkit has its module
(opennmt, joeynmt, fairseq); what they share, the set-ups, the running of a toolkit and the
data and scoring, is in the ``peer_*`` modules, and ``peers`` runs them side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def repo_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the repository root first on PYTHONPATH, so that a
    child ``python -m bench.NAME`` imports this checkout whatever its working directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env
