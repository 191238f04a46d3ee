"""Training: optimiser/schedule/run-folder machinery, the student distillation and the retrieval trainer.

Nothing outside this package imports from it; inference loads only the checkpoints it writes.
"""
