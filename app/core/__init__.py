"""Cross-cutting pieces of the API: settings, database sessions, security, monitoring, errors."""
