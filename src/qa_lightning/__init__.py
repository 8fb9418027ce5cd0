"""qa_lightning: fine-tune transformer encoders for extractive question answering."""

__version__ = "0.1.0"
