// Package auth owns who may do what: identities (a users file in htpasswd format,
// LDAP, CI tokens, anonymous), the rules that map subjects to registries, repository
// globs and actions, the Docker token service (signed JWTs), and the defences around
// them (rate limiting of failed logins, constant-time comparisons, escaped LDAP
// filters). It knows nothing of HTTP routing: the gateway asks it questions.
package auth
