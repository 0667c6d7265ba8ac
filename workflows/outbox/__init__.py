"""Messages written with their cause and delivered later by the channels, each exactly once."""
