"""What a person looks at: the console, figures, TensorBoard pictures and the
HParams session. Imports trainer.core only."""
