"""The gateway's HTTP routes, one module per audience: open-data feeds, the JSON API, live updates and
pushed operator feeds."""
