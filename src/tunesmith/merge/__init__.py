"""Adapter merge and model merging (linear, SLERP, task arithmetic, TIES, DARE)."""
