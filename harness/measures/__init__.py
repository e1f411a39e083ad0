"""Measures on arrays, with no run or config in sight: ROC and TAR@FAR, ERC/EDC, statistics, clustering scores,
quality estimators, the IJB protocol."""
