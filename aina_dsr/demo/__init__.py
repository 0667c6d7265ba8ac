"""``aina-dsr demo``: the whole desk on a throw-away database, Telegram and mail stood in for."""
