"""Tri-modal text <-> 3D shape retrieval."""
