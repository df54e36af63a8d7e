"""Small helpers every part of the solver core shares."""
