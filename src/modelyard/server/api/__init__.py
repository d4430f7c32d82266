"""The REST API's routers, one module per noun group, all under /api/v1."""
