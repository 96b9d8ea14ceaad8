// Package oci owns the vocabulary of the OCI distribution and image specs that every
// other package shares: validated values (digests, repository names, tags, references),
// the registry error table, media types and manifest parsing.
//
// Values are parsed once at the edge; a value of one of these types is valid by
// construction, so code past the router never re-validates strings.
package oci
