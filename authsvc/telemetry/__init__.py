"""What the service tells its operators: metrics, log formats and request ids."""
