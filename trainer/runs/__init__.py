"""One run: its folder (lock, marker, the record: the one writer of its
files), the resume rules, and the job that builds and fits inside it.
Imports trainer.core and trainer.report."""
