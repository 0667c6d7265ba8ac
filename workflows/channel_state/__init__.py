"""What the channels keep between updates: dialog states, staff cards, mail cursors."""
