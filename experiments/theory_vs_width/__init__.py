"""Theory vs. width: network, linearized-network and kernel memorization on the same masks;
run ``python -m experiments.theory_vs_width``."""
