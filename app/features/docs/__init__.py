"""The API's own docs: Swagger UI at ``/docs`` (its assets served locally) and ``/openapi.json``,
readable by whom ``APP_DOCS`` says."""
