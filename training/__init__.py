"""Training jobs: codec alignment, MOPD (with OPD and GRPO baselines) and tinyworld.

Empty for now; built by the training issues. Needs the ``models`` extra.
"""
