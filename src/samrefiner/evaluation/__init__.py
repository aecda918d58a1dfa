"""Measuring masks: metrics, ground truth, the paper's Table 1 bench and flawed-mask generation."""
