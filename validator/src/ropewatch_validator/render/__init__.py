"""report.json and its renderings (terminal, Markdown, HTML)."""
