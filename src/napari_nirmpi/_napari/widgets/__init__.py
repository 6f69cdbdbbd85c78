"""Dock widgets, one per workflow step: Preprocess -> Baseline -> Train -> Sample -> Compare."""
