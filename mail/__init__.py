"""The e-mail channel: IMAP poller, parser and SMTP sender."""
