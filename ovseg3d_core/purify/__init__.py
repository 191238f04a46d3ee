"""GeoPurify: student affinity network, teachers, distillation and geometry-guided pooling."""
