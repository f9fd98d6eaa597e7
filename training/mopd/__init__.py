"""Multi-rollout on-policy distillation (MOPD) with OPD, GRPO and SFT baselines in one harness.

Modules: `rollouts` (groups of sampled completions with the student's log-probabilities),
`verifiers` (math, multiple choice, sandboxed code, tool calls, tinyworld), `peers` (the
teacher's peer contexts per rollout), `losses`, `teacher` (EMA / frozen / separate), `analysis`
(teacher-signal AUROC and rank correlation per context mode), `student` (the tiny pre-trained
tinyworld student, shipped in ``checkpoints/sort_student``) and `job` (``latentwire train mopd``).
See docs/mopd.md.
"""
