"""Scene data: RGB-D sequences, labelled scans, their layouts and the renderers that make views of them."""
