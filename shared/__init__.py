"""Code shared by every function: settings, database access, the pg-boss client, auth, logging."""
