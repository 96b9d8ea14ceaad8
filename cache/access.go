package cache

import (
	"context"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// Access records (last pull time and pull count of tags and manifests, for lifecycle
// rules such as "keep if pulled within 30 days") are gathered in memory and written in
// one transaction per flush interval, so pulls never wait for an index write.

// Access is when a tag or manifest was last pulled and how often.
type Access struct {
	PulledAt int64 `json:"pulledAt"` // unix nanoseconds; 0: never
	Pulls    int64 `json:"pulls"`
}

func tagAccessKey(reg, repo, tag string) []byte { return key(kindTagAccess, reg, repo, tag) }

type accessLog struct {
	mu      sync.Mutex
	pending map[string]Access // index key → pulls since the last flush
}

// RecordPull notes a pull of manifest d in reg/repo, through tag when it is not empty.
// Reads through GetManifest are recorded already; this is for manifests served
// otherwise (fetched from an upstream).
func (s *Store) RecordPull(reg, repo, tag string, d oci.Digest) {
	now := s.now().UnixNano()
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	if s.access.pending == nil {
		s.access.pending = map[string]Access{}
	}
	note := func(k []byte) {
		a := s.access.pending[string(k)]
		a.PulledAt, a.Pulls = now, a.Pulls+1
		s.access.pending[string(k)] = a
	}
	note(repoManifestKey(reg, repo, d))
	if tag != "" {
		note(tagAccessKey(reg, repo, tag))
	}
}

// FlushAccess writes the pulls gathered since the last flush.
func (s *Store) FlushAccess() error {
	s.access.mu.Lock()
	pending := s.access.pending
	s.access.pending = nil
	s.access.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	return s.update(func(txn *badger.Txn) error {
		for k, a := range pending {
			kb := []byte(k)
			if kb[0] == kindRepoManifest {
				var rm repoManifest
				ok, err := getJSON(txn, kb, &rm)
				if err != nil {
					return err
				}
				if !ok {
					continue // deleted since it was pulled
				}
				rm.PulledAt, rm.Pulls = max(rm.PulledAt, a.PulledAt), rm.Pulls+a.Pulls
				if err := setJSON(txn, kb, rm); err != nil {
					return err
				}
				continue
			}
			var old Access
			if _, err := getJSON(txn, kb, &old); err != nil {
				return err
			}
			old.PulledAt, old.Pulls = max(old.PulledAt, a.PulledAt), old.Pulls+a.Pulls
			if err := setJSON(txn, kb, old); err != nil {
				return err
			}
		}
		return nil
	})
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
	err = s.db.View(func(txn *badger.Txn) error {
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
