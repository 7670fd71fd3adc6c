"""Coverage-guided fuzzing (atheris) of every decoder of outside bytes; ``python -m fuzz.run``."""
