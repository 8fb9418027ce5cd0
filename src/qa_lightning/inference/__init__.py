"""Answering questions with a trained model: ``QuestionAnswerer``, model loading, ONNX export."""

from qa_lightning.inference.answerer import QuestionAnswerer, answer_question

__all__ = ["QuestionAnswerer", "answer_question"]
