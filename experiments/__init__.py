"""Experiment scripts: each answers one question from a study (see DESIGN.md)."""
