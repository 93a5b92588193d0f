"""JSON Schemas for model YAML files, gallery entries and launch plans (package data)."""
