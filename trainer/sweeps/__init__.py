"""Orchestrators of many runs and their readers: the sweep's plan and callback,
the process launcher's job runner, cross-validation, summaries and seed
groups. They start run folders and read them back; nothing below calls up."""
