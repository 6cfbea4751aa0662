"""Segments: rules over profiles kept current by the processor, and micro-segment discovery."""
