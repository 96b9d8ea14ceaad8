package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

func catalog(t *testing.T, s *Store, reg string) []string {
	t.Helper()
	repos, _, err := s.ListRepositories(context.Background(), reg, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return repos
}

// A repository left with nothing leaves the catalog at the next collection; one that
// receives content while it is being pruned stays.
func TestEmptiedRepositoriesLeaveTheCatalog(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := testStore(t, c.Now)
	ctx := context.Background()
	d := putManifest(t, s, "dev", "gone", image(t, s, "dev", "gone", "x"), false, "1.0")
	putManifest(t, s, "dev", "kept", image(t, s, "dev", "kept", "y"), false, "1.0")
	putManifest(t, s, "dev", "racing", image(t, s, "dev", "racing", "z"), false)
	for _, repo := range []string{"gone", "racing"} {
		md := d
		if repo == "racing" {
			md = oci.FromBytes(oci.SHA256, image(t, s, "dev", "racing", "z"))
		}
		if err := s.DeleteManifest(ctx, "dev", repo, md, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting the manifests leaves their blobs: the first collection takes the
	// manifests, the next (an hour later) the blobs, and the repositories are empty.
	c.Add(2 * time.Hour)
	if _, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Hour)
	// While "racing" (the second repository dropped) is being dropped, a push puts a
	// blob into it.
	calls := 0
	hookBeforeConditionalDelete = func() {
		if calls++; calls == 2 {
			putBlob(t, s, "dev", "racing", []byte("arrived during the pruning"))
		}
	}
	defer func() { hookBeforeConditionalDelete = nil }()
	rep, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(catalog(t, s, "dev"), ","); got != "kept,racing" || rep.Repositories != 1 {
		t.Errorf("catalog after GC: %q (%d dropped), want kept,racing", got, rep.Repositories)
	}
	if _, _, err := s.ListTags(ctx, "dev", "gone", "", 10); err == nil {
		t.Error("the emptied repository still lists tags")
	}
	clean(t, s)
}

// A tag's pull record belongs to the tag as long as it names the same content:
// deleting or moving the tag drops it, and a pull flushed after the delete does not
// bring it back.
func TestTagPullRecordsEndWithTheTag(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	a := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "a"), false, "latest", "1.0")
	b := image(t, s, "dev", "app", "b")
	pull := func(tag string) {
		t.Helper()
		if _, err := s.GetManifest(ctx, "dev", "app", oci.Reference{Tag: oci.Tag(tag)}); err != nil {
			t.Fatal(err)
		}
	}
	tagPulls := func(tag string, d oci.Digest) int64 {
		t.Helper()
		if err := s.FlushAccess(); err != nil {
			t.Fatal(err)
		}
		_, tp, err := s.PullInfo(ctx, "dev", "app", tag, d)
		if err != nil {
			t.Fatal(err)
		}
		return tp.Pulls
	}
	pull("latest")
	pull("latest")
	if n := tagPulls("latest", a); n != 2 {
		t.Fatalf("latest pulled %d times, want 2", n)
	}
	bd := putManifest(t, s, "dev", "app", b, false, "latest") // moved to other content
	if n := tagPulls("latest", bd); n != 0 {
		t.Errorf("a moved tag kept %d pulls of its old content", n)
	}
	pull("1.0")
	if err := s.DeleteTag(ctx, "dev", "app", "1.0", nil); err != nil {
		t.Fatal(err)
	}
	putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "a"), false, "1.0") // pushed again
	if n := tagPulls("1.0", a); n != 0 {
		t.Errorf("a re-pushed tag inherited %d pulls (one of them flushed after its delete)", n)
	}
}

// Large values (manifests over the value threshold) live in Badger's value log; the
// collection compacts it once they are deleted.
func TestCollectionCompactsTheValueLog(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := smallStore(t, c.Now) // value threshold 32 KiB
	ctx := context.Background()
	config := []byte("{}")
	cd := putBlob(t, s, "dev", "app", config)
	var big []oci.Digest
	for i := range 120 {
		pad := strings.Repeat("x", 40<<10)
		m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` +
			desc(mtConfig, cd, len(config)) + `,"layers":[],"annotations":{"pad":"` + pad + `","n":"` + string(rune('a'+i%26)) + strings.Repeat("y", i) + `"}}`)
		big = append(big, putManifest(t, s, "dev", "app", m, false))
	}
	vlog := func() int64 {
		var n int64
		files, _ := filepath.Glob(filepath.Join(s.dir, "index", "*.vlog"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	if err := s.db.(*index.Badger).Sync(); err != nil {
		t.Fatal(err)
	}
	before := vlog()
	for _, d := range big {
		if err := s.DeleteManifest(ctx, "dev", "app", d, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(time.Hour)
	if _, err := s.CollectGarbage(ctx, GCOptions{}); err != nil { // deletes the manifests' content
		t.Fatal(err)
	}
	// Badger learns which values are garbage when it flushes and compacts its tables,
	// which a running registry's traffic makes it do before the next collection; here
	// some traffic (tags pushed) and a forced compaction do it at once.
	small := image(t, s, "dev", "app", "small")
	for i := range 40 {
		var tags []oci.Tag
		for j := range 200 {
			tags = append(tags, oci.Tag(fmt.Sprintf("tag-%03d-%03d-%s", i, j, strings.Repeat("x", 60))))
		}
		putManifest(t, s, "dev", "app", small, false, tags...)
	}
	if err := s.db.(*index.Badger).Flatten(1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CollectGarbage(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	after := vlog()
	if after >= before {
		t.Errorf("value log %d bytes before deleting %d large manifests, %d after the collection", before, len(big), after)
	}
}
