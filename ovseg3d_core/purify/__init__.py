"""GeoPurify at inference: the student affinity network and geometry-guided pooling.

Its training (teachers, distillation) lives in :mod:`ovseg3d_core.training`.
"""
