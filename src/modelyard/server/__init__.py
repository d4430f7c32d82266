"""The registry server (seed 000's api_client talks to it): a REST API under /api/v1, a web UI,
metrics. A thin layer over `modelyard.Registry`: every endpoint calls one Registry method."""
