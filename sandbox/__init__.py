"""Dev-only package: embedded servers, fakes of the external services, sample data."""
