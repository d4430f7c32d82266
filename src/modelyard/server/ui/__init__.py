"""The web UI: server-rendered Jinja2 pages with htmx, served by `modelyard serve` at `/`.

`routes.install(app)` adds the pages, the browser sessions (`sessions`), the static files and
the error pages; `web` holds what the pages share and `learning` the learning form's fields.
"""
