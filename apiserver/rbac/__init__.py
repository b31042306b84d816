"""RBAC (`rbac.authorization.k8s.io/v1`): the pure authorizer (authorizer.py), the default roles
(defaults.py), aggregation (aggregation.py), validation (validation.py), escalation prevention
(escalation.py) and the API server's informer-fed cache with the start-up bootstrap (cache.py)."""
