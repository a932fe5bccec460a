"""finetune-pipeline: a reproducible DVC pipeline to fine-tune, distil and evaluate text classifiers."""

__version__ = "0.1.0"
