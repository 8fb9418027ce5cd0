"""Serving a trained model over HTTP: request validation, dynamic batching, the app and web page."""
