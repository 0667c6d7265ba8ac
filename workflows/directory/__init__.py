"""The shop's customer list: imported from CSV, validated field by field, found by identifier."""
