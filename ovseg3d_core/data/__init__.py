"""Data apart from the maps the segmenter builds: scene data (:mod:`.scenes`), shape data (:mod:`.shapes`).

Each module imports its heavy dependencies lazily.
"""
