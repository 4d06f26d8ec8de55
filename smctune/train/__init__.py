"""One trial inside a Ray worker: the training loop, optimisers, the pruning schedule driving it and
the absolute collapse rule.
"""
