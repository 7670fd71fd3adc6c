"""The dialog service: the policy that picks which question to ask the annotator."""
