"""Step 6 of the flow: get artifacts onto the nodes of a fleet, verify them there, switch, roll back."""
