"""What approving a request does: the work itself, and the access report it may produce."""
