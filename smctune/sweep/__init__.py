"""A planned sweep run on Ray Tune: the plan, execution stage by stage, Optuna search inside cells,
per-cell ASHA, trial order, threshold search, cluster checks, status and cost estimates.
"""
