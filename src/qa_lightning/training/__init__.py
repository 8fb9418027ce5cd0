"""The Lightning runtime: checkpoint IO, callbacks, resume, run outputs, sweeps, the run recipe."""
