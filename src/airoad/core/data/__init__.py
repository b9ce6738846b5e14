"""Chat data: rows read and validated, conversations rendered and masked, text checks. No torch."""
