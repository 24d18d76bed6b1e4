"""The remote agent: one self-contained Python file pushed to devices that have Python.

``agent_source()`` composes it from ``hwnat/measure/_timing.py`` (the timing loop, stdlib only) followed by
``agent_main.py`` (runtime loading, fingerprint, ``--check``), so the timing loop exists exactly once.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def agent_source() -> str:
    """The agent script's text (timing loop + agent main), as pushed to a device."""
    from hwnat.measure import _timing

    timing = Path(_timing.__file__).read_text()
    main = (_HERE / "agent_main.py").read_text()
    if re.search(r"^from __future__ ", main, re.MULTILINE):  # only allowed at the very top of the composed file
        raise RuntimeError("agent_main.py must not use __future__ imports (it is appended to _timing.py)")
    return f"{timing}\n\n# ---- hwnat/devices/agent/agent_main.py ----\n\n{main}"


def agent_digest() -> str:
    """Short content hash of the agent, used in its remote file name."""
    return hashlib.sha256(agent_source().encode()).hexdigest()[:12]
