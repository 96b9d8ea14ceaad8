package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// image returns a small image manifest whose config makes it unique, its blobs stored
// in reg/repo.
func image(t *testing.T, s *Store, reg, repo, name string) []byte {
	t.Helper()
	config := []byte(`{"name":"` + name + `"}`)
	layer := []byte("layer of " + name)
	putBlob(t, s, reg, repo, config)
	putBlob(t, s, reg, repo, layer)
	return imageManifest(desc(mtConfig, oci.FromBytes(oci.SHA256, config), len(config)), desc(mtLayer, oci.FromBytes(oci.SHA256, layer), len(layer)))
}

// once runs f the first time the returned func is called.
func once(f func()) func() {
	var o sync.Once
	return func() { o.Do(f) }
}

func tagOf(t *testing.T, s *Store, reg, repo, tag string) oci.Digest {
	t.Helper()
	m, err := s.HeadManifest(context.Background(), reg, repo, oci.Reference{Tag: oci.Tag(tag)})
	if err != nil {
		return ""
	}
	return m.Digest
}

// A retention job deletes a tag only if it still points at what it planned on and was
// not pushed since: a tag re-pushed — to other content, or to the same content, before
// or during the delete — stays.
func TestConditionalTagDeletesKeepTagsPushedSincePlanning(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := testStore(t, c.Now)
	ctx := context.Background()
	a := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "a"), false, "1.0", "1.1", "1.2", "1.3")
	b := image(t, s, "dev", "app", "b")
	planned := c.Now()
	c.Add(time.Second)

	putManifest(t, s, "dev", "app", b, false, "1.0") // moved to other content
	if ok, err := s.DeleteTagIf(ctx, "dev", "app", "1.0", a, planned); ok || err != nil {
		t.Errorf("a tag moved since planning was deleted: %v %v", ok, err)
	}
	putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "a"), false, "1.1") // same content, pushed again
	if ok, err := s.DeleteTagIf(ctx, "dev", "app", "1.1", a, planned); ok || err != nil {
		t.Errorf("a tag pushed again since planning was deleted: %v %v", ok, err)
	}
	// Pushed again while the delete's transaction runs.
	hookBeforeConditionalDelete = once(func() { putManifest(t, s, "dev", "app", b, false, "1.2") })
	defer func() { hookBeforeConditionalDelete = nil }()
	if ok, err := s.DeleteTagIf(ctx, "dev", "app", "1.2", a, planned); ok || err != nil {
		t.Errorf("a tag pushed during the delete was deleted: %v %v", ok, err)
	}
	hookBeforeConditionalDelete = nil
	if ok, err := s.DeleteTagIf(ctx, "dev", "app", "1.3", a, planned); !ok || err != nil {
		t.Errorf("an unchanged tag: %v %v", ok, err)
	}
	bd := oci.FromBytes(oci.SHA256, b)
	for tag, want := range map[string]oci.Digest{"1.0": bd, "1.1": a, "1.2": bd, "1.3": ""} {
		if got := tagOf(t, s, "dev", "app", tag); got != want {
			t.Errorf("tag %s → %s, want %s", tag, got, want)
		}
	}
	clean(t, s)
}

// Untagged pruning deletes a manifest only if it is still unreachable when the delete
// runs: a tag pushed for it, or a new index listing it, since the snapshot — or during
// the deleting transaction — keeps it.
func TestUntaggedPruningKeepsManifestsThatBecameReachable(t *testing.T) {
	for _, c := range []struct {
		name   string
		during bool // in the deleting transaction rather than before it
		act    func(t *testing.T, s *Store, m []byte)
	}{
		{"tagged after the snapshot", false, func(t *testing.T, s *Store, m []byte) { putManifest(t, s, "dev", "app", m, false, "again") }},
		{"tagged during the delete", true, func(t *testing.T, s *Store, m []byte) { putManifest(t, s, "dev", "app", m, false, "again") }},
		{"listed by a new index after the snapshot", false, func(t *testing.T, s *Store, m []byte) {
			putManifest(t, s, "dev", "app", indexManifest(desc(mtImage, oci.FromBytes(oci.SHA256, m), len(m))), false)
		}},
		{"listed by a new index during the delete", true, func(t *testing.T, s *Store, m []byte) {
			putManifest(t, s, "dev", "app", indexManifest(desc(mtImage, oci.FromBytes(oci.SHA256, m), len(m))), false)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := &clock{now: time.Unix(1e9, 0)}
			s := testStore(t, clk.Now)
			ctx := context.Background()
			m := image(t, s, "dev", "app", "untagged")
			d := putManifest(t, s, "dev", "app", m, false)
			putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "kept"), false, "latest")
			other := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "other"), false) // untagged, untouched
			clk.Add(time.Hour)
			act := once(func() { c.act(t, s, m) })
			if c.during {
				hookBeforeConditionalDelete = act
			} else {
				hookAfterSnapshot = act
			}
			defer func() { hookBeforeConditionalDelete, hookAfterSnapshot = nil, nil }()
			n, err := s.PruneUntagged(ctx, "dev", nil, time.Minute, false)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.HeadManifest(ctx, "dev", "app", oci.Reference{Digest: d}); err != nil {
				t.Errorf("the manifest that became reachable was pruned: %v", err)
			}
			if _, err := s.HeadManifest(ctx, "dev", "app", oci.Reference{Digest: other}); err == nil || n != 1 {
				t.Errorf("the untouched untagged manifest: pruned %d, still there: %v", n, err == nil)
			}
			clean(t, s)
		})
	}
}

// An API delete asks the immutability rules in its own transaction: a release tag
// pushed onto the manifest while the delete runs refuses it, and so does a release tag
// on an index listing it.
func TestDeletesAskProtectionInTheirTransaction(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	errImmutable := errors.New("immutable")
	protect := func(tag string) error {
		if tag == "2.0.0" {
			return errImmutable
		}
		return nil
	}
	m := image(t, s, "dev", "app", "x")
	d := putManifest(t, s, "dev", "app", m, false, "snapshot")
	hookBeforeConditionalDelete = once(func() { putManifest(t, s, "dev", "app", m, false, "2.0.0") })
	defer func() { hookBeforeConditionalDelete = nil }()
	if err := s.DeleteManifest(ctx, "dev", "app", d, protect); !errors.Is(err, errImmutable) {
		t.Errorf("delete while an immutable tag was pushed onto it: %v", err)
	}
	hookBeforeConditionalDelete = nil

	child := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "child"), false)
	mid := indexManifest(desc(mtImage, child, 0))
	midd := putManifest(t, s, "dev", "app", mid, false)
	putManifest(t, s, "dev", "app", indexManifest(desc("application/vnd.oci.image.index.v1+json", midd, 0)), false, "2.0.0")
	if err := s.DeleteManifest(ctx, "dev", "app", child, protect); !errors.Is(err, errImmutable) {
		t.Errorf("deleting a manifest an immutable index lists (through another index): %v", err)
	}
	if err := s.DeleteManifest(ctx, "dev", "app", child, nil); err != nil {
		t.Errorf("without protection: %v", err)
	}
}
