"""ClickHouse delivery analytics: migrations, the sink, live SQL, fleet route priors, reports."""
