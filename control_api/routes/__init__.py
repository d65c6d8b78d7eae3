"""HTTP operations, one module per area; each ``register(router, plane)``
declares its operations on the shared :class:`control_api.routing.Router`."""
