"""The Telegram channel: the customer dialog and the staff group."""
