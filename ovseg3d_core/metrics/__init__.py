"""Segmentation and retrieval metrics."""
