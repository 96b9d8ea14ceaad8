package cache

import (
	"context"
	"sync"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Access records (last pull time and pull count of tags and manifests, for lifecycle
// rules such as "keep if pulled within 30 days") are gathered in memory and written
// every flush interval, so pulls never wait for an index write. A tag's record lasts as
// long as the tag points at the same content: deleting or moving the tag drops it.

// Access is when a tag or manifest was last pulled and how often.
type Access struct {
	PulledAt int64 `json:"pulledAt"` // unix nanoseconds; 0: never
	Pulls    int64 `json:"pulls"`
}

func tagAccessKey(reg, repo, tag string) []byte { return key(kindTagAccess, reg, repo, tag) }

type accessLog struct {
	mu      sync.Mutex
	pending map[string]pull // index key → pulls since the last flush
}

// pull is what is gathered of one key between flushes.
type pull struct {
	at, n  int64
	digest oci.Digest // the manifest pulled (for a tag: what it pointed at then)
}

// RecordPull notes a pull of manifest d in reg/repo, through tag when it is not empty.
func (s *Store) RecordPull(reg, repo, tag string, d oci.Digest) {
	now := s.now().UnixNano()
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	if s.access.pending == nil {
		s.access.pending = map[string]pull{}
	}
	note := func(k []byte) {
		p := s.access.pending[string(k)]
		p.at, p.n, p.digest = now, p.n+1, d
		s.access.pending[string(k)] = p
	}
	note(repoManifestKey(reg, repo, d))
	if tag != "" {
		note(tagAccessKey(reg, repo, tag))
	}
}

// flushBatch bounds the records one flush transaction writes.
const flushBatch = 1000

// FlushAccess writes the pulls gathered since the last flush, in bounded
// transactions. What could not be written goes back to the pending records (merged
// with pulls since), so a failed flush loses no pull time: retention rules such as
// pulled_within must not take an image in use for an unused one.
func (s *Store) FlushAccess() error { return s.flushAccess(false) }

// flushAccess is FlushAccess, as a write that frees space (s.updateFreeing) for the
// flush that a job freeing space (retention, eviction) decides on, which goes where
// that job goes.
func (s *Store) flushAccess(freeing bool) error {
	s.access.mu.Lock()
	pending := s.access.pending
	s.access.pending = nil
	s.access.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	keys := make([]string, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	written := 0
	var err error
	for lo := 0; lo < len(keys) && err == nil; lo += flushBatch {
		err = s.flushKeys(freeing, keys[lo:min(lo+flushBatch, len(keys))], pending, &written)
	}
	if err != nil {
		s.access.mu.Lock()
		for k, p := range pending {
			q := s.access.pending[k]
			if s.access.pending == nil {
				s.access.pending = map[string]pull{}
			}
			if q.n > 0 { // pulled again meanwhile: keep the newer time and digest
				p.at, p.digest = max(p.at, q.at), q.digest
			}
			p.n += q.n
			s.access.pending[k] = p
		}
		s.access.mu.Unlock()
	}
	return err
}

// flushKeys writes the pending pulls of keys (at most flushBatch: a transaction stays
// short on any index), deleting from pending what it wrote.
func (s *Store) flushKeys(freeing bool, keys []string, pending map[string]pull, written *int) error {
	return s.splitUpdate(freeing, 0, len(keys), func(txn index.Txn, lo, hi int) error {
		if hookFlushAccess != nil {
			if err := hookFlushAccess(); err != nil {
				return err
			}
		}
		for _, k := range keys[lo:hi] {
			if err := s.writePull(txn, []byte(k), pending[k]); err != nil {
				return err
			}
		}
		return nil
	}, func(lo, hi int) {
		for _, k := range keys[lo:hi] {
			delete(pending, k)
		}
		*written += hi - lo
	})
}

// hookFlushAccess, set by tests only, runs in every flush transaction; an error fails
// it.
var hookFlushAccess func() error

// writePull adds p to the pull record at k. A manifest record that is gone is not
// recreated; nor is the record of a tag that was deleted, or moved to other content,
// after the pull.
func (s *Store) writePull(txn index.Txn, k []byte, p pull) error {
	if k[0] == kindRepoManifest {
		var rm repoManifest
		ok, err := getJSON(txn, k, &rm)
		if err != nil || !ok {
			return err
		}
		rm.PulledAt, rm.Pulls = max(rm.PulledAt, p.at), rm.Pulls+p.n
		return setJSON(txn, k, rm)
	}
	tag := append([]byte{kindTag}, k[1:]...) // a and t keys share their layout
	v, ok, err := getValue(txn, tag)
	if err != nil {
		return err
	}
	if d, _ := decodeTagValue(v); !ok || d != p.digest || tagPushedAt(v) > p.at {
		return nil // deleted, moved, or pushed again after this pull
	}
	var old Access
	if _, err := getJSON(txn, k, &old); err != nil {
		return err
	}
	old.PulledAt, old.Pulls = max(old.PulledAt, p.at), old.Pulls+p.n
	return setJSON(txn, k, old)
}

// flushAccessEvery runs FlushAccess on an interval until ctx ends, then once more.
func (s *Store) flushAccessEvery(ctx context.Context, every time.Duration, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.FlushAccess(); err != nil {
				s.log.Error("flush access records", "err", err)
			}
			return
		case <-t.C:
			if err := s.FlushAccess(); err != nil {
				s.log.Error("flush access records", "err", err)
			}
		}
	}
}

// PullInfo returns the recorded pulls of manifest d in reg/repo and, when tag is not
// empty, of the tag.
func (s *Store) PullInfo(ctx context.Context, reg, repo, tag string, d oci.Digest) (manifest, tagged Access, err error) {
	err = s.db.View(func(txn index.Txn) error {
		var rm repoManifest
		if _, err := getJSON(txn, repoManifestKey(reg, repo, d), &rm); err != nil {
			return err
		}
		manifest = Access{PulledAt: rm.PulledAt, Pulls: rm.Pulls}
		if tag == "" {
			return nil
		}
		_, err := getJSON(txn, tagAccessKey(reg, repo, tag), &tagged)
		return err
	})
	return manifest, tagged, err
}
