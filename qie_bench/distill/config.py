"""Training hyper-parameters as a suite reads them (no torch: suites validate without it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainingConfig(BaseModel):
    """Hyper-parameters of student training and of pruning recovery (a suite's `training` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(150, ge=0, le=1_000_000, description="optimizer steps")
    lr: float = Field(3e-4, gt=0.0, le=1.0, description="peak AdamW learning rate (cosine decay to 10%); tuned on tiny")
    batch: int = Field(4, ge=1, le=256, description="recorded calls per optimizer step")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of L_recon; 1 - alpha weighs L_KL")
    temperature: float = Field(2.0, gt=0.0, le=100.0, description="softmax temperature of L_KL")
    feature_weight: float = Field(0.1, ge=0.0, le=100.0, description="weight of block feature matching")
    sampled_timesteps: int = Field(2, ge=0, le=64, description="extra calls per case at drawn noise levels")
    held_out_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of cases held out for evaluation")
    max_cases: int | None = Field(None, ge=2, description="use at most this many cases (manifest order)")
    seed: int = Field(0, ge=0)


__all__ = ["TrainingConfig"]
