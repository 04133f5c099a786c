"""Access from anywhere: one read layer (:mod:`flowcept.access.sources`,
:mod:`flowcept.access.core`) under an HTTP query service (``flowcept serve``),
``flowcept query``, Prometheus metrics (``flowcept metrics``), an MCP server
(``flowcept mcp``), an agent (``flowcept ask``) and a Perfetto trace export
(``flowcept export --format perfetto``).  Everything here is read-only.

Importing this package is cheap: FastAPI, prometheus-client, mcp and prov are
imported inside the functions that need them (extras ``serve``, ``metrics``,
``mcp``, ``prov``).
"""
