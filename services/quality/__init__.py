"""The quality service: annotation-quality prediction from click sequences."""
