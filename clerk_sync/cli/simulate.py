"""``clerk-sync simulate``: serve the fake Clerk Backend API on loopback."""
