"""Entry points: thin commands that turn configs or arguments into library calls."""
