"""Personal data kept as the law asks: encrypted, masked in logs, audited, purged on time."""
