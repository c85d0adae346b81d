"""Search: a query's text against the catalogue, the same ranking in evaluation and serving (`engine`)."""
