"""trainer's Optuna sweeper (Hydra finds sweepers only in the `hydra_plugins`
namespace package); its logic is trainer.sweeps.search."""
