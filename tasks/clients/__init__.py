"""Clients of the services a run talks to.

V2, the V1 API gateway, Auth0, token minting, the user and organization directories.
"""
