// Package cache owns what dockyard keeps, over a blob store (package blobstore: one
// copy of each blob, shared by every registry and repository, on disk or in S3) and
// an index (package index: ordered keys in serialisable transactions, Badger by
// default): what the index's keys mean — repositories, tags, manifests, blob links,
// referrers, reference counts, upload sessions, pull records, and opaque record tables
// other packages keep there (CI tokens, revocations) —; uploads and proxy fetches into
// the blob store; and garbage collection, eviction and fsck across both.
//
// It knows nothing of HTTP, upstream registries or authentication. Every change that
// moves a reference count is made in the same index transaction as the change that
// caused it. The index detects conflicts on keys a transaction read — Badger not on
// ranges it scanned —, so where a decision rests on a scan (pending references, a
// repository being empty, a manifest being unreachable) the writers that could change
// it also write a key the deciding transaction reads. Background jobs decide from snapshots and delete
// only if the decision still holds inside the deleting transaction. fsck (Check)
// recounts everything and reports any difference.
//
// The index records its format version and is upgraded in place at Open (format.go).
package cache
