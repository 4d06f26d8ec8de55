"""MLflow: one experiment per sweep, a parent run and one child run per trial, written off Tune's
event loop; and reading a sweep back from a tracking server for ``report --mlflow-uri``.
"""
