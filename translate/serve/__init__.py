"""``translate serve``: request checking, JSON answers, dynamic batching and the HTTP server."""
