"""Shape data: procedural shapes and captions, Text2Shape and ShapeNet meshes, rendered samples of them."""
