"""Multi-rollout on-policy distillation with OPD, GRPO and SFT baselines (being built, issue 7)."""
