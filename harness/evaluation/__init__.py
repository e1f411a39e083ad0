"""Evaluating a run or a released network: embeddings, verification sets, IJB, training diagnostics."""
