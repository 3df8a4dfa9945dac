"""The what-if service: response plans simulated forward from now, ranked, checked and adopted."""
