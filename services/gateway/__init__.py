"""The gateway: the single front door for people and web clients (REST/JSON, auth, the web annotator)."""
