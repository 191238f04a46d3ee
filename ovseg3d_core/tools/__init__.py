"""Command-line tools of the core: scan conversion and offline evaluation."""
