// Package cache owns what dockyard keeps: the content-addressed blob store (one file
// per blob, shared by every registry and repository) and the Badger index of
// repositories, tags, manifests, blob links, referrers, reference counts and upload
// sessions.
//
// It knows nothing of HTTP or upstream registries. Every change that moves a reference
// count is made in the same index transaction as the change that caused it, so the
// counts stay exact for garbage collection.
package cache
