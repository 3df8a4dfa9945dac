"""OptimizerService: the live network picture and the decisions taken from it (almere.optimizer.v1)."""
