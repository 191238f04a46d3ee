"""Dataset loaders, view rendering and procedural shapes (each module imports its heavy deps lazily)."""
