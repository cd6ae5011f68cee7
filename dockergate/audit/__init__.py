"""Who did what: one record per request, handed to the access log, audit and metrics."""
