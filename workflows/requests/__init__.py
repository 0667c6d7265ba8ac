"""A request's life: filing, verification, staff actions, and the service the channels call."""
