"""Importers for checkpoints of the official TAM and GLTR code."""
