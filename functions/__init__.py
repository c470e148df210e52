"""One module per Cloud Function: parse the request, call ``shared``, shape the answer."""
