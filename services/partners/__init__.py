"""The partner registry: partners and their data-sharing agreements (almere.partners.v1)."""
