"""Feature packages of the API: each owns its router, schemas, service and queries."""
