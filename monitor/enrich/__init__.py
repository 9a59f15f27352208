"""Enrichment: what is added to an article before it is matched.

:mod:`monitor.enrich.fulltext`  the main text of the page an entry links to (``fulltext = true``)
"""
