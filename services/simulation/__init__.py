"""The simulated annotator (not deployed): the standard automatic clicker, human-like noise, the timing
model of each question type, and the drivers that run them against the real services."""
