"""Reaching target devices: profiles, transports, and the client of the on-device agent."""
