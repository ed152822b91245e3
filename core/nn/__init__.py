"""Networks and what they are made of: activations, layers and networks of named Variables,
losses, and the three routes to the gradient."""
