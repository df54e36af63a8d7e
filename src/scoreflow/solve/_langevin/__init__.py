"""Private: `scoreflow.solve` re-exports the public names."""
