"""The register as a picture: its figures (the views of ``requests list``) and its page."""
