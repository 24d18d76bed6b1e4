"""The measurement protocol as a typed config, recorded next to every result."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Protocol(BaseModel):
    """How one model is timed. Every field is recorded with the result it produced.

    Defaults suit a noisy 2-core CPU machine: each block costs roughly ``warmup_s + rounds *
    min_round_s`` seconds of timing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_s: float = Field(0.1, ge=0, description="warm up for at least this many seconds")
    warmup_runs: int = Field(3, ge=0, description="and at least this many calls")
    rounds: int = Field(5, ge=1, description="independent timed rounds")
    runs: int = Field(0, ge=0, description="samples per round; 0 = as many as fit in min_round_s")
    min_round_s: float = Field(0.06, gt=0, description="round length when runs == 0")
    max_runs_per_round: int = Field(200, ge=3, description="cap on samples per round when runs == 0")
    cooldown_s: float = Field(0.0, ge=0, description="sleep between rounds (thermal recovery)")
    unstable_tolerance: float = Field(
        0.10, gt=0, description="round medians whose (max-min)/median exceeds this mark it unstable")
    max_remeasure: int = Field(2, ge=0, description="re-measure an unstable result up to this many times")

    def timing_kwargs(self) -> dict:
        """Keyword arguments of ``hwnat.measure._timing.time_runs``."""
        return {k: getattr(self, k) for k in (
            "warmup_s", "warmup_runs", "rounds", "runs", "min_round_s", "max_runs_per_round", "cooldown_s")}

    def merged(self, overrides: dict | None) -> Protocol:
        """A copy with some fields replaced (validated)."""
        if not overrides:
            return self
        return Protocol(**{**self.model_dump(), **overrides})
