"""projector: keeps the read models current from the event stream."""
