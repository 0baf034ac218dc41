"""trainer's Hydra launcher (Hydra finds launchers only in the `hydra_plugins`
namespace package): parallel sweep jobs, each in a process of its own."""
