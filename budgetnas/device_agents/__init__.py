"""Device agents: lease measurement jobs from the LUT server, measure on the device, report."""
