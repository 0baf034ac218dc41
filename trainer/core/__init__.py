"""The training core: the config schema and its rules, data, pipeline, models,
losses, schedules, the engine and its captured step, checkpoints. Knows
nothing of run folders, Hydra or the console; imports nothing above it."""
