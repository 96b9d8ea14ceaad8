package cache

import (
	"context"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// fsck finds what is wrong in the index — a reference count that differs from a
// recount, a tag pointing at a manifest the repository does not have, a link to a blob
// without a record — and --repair puts it right.
func TestFsckFindsAndRepairsWrongCountsDanglingTagsAndLinks(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	m := image(t, s, "dev", "app", "x")
	d := putManifest(t, s, "dev", "app", m, false, "1.0")
	layer := oci.FromBytes(oci.SHA256, []byte("layer of x"))
	other := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "y"), false, "2.0")
	ghost := putBlob(t, s, "dev", "app", []byte("a blob whose record goes"))
	clean(t, s)
	err := s.update(func(txn index.Txn) error {
		// A wrong count, a tag left behind by its manifest, a link left by its record.
		if err := txn.Set(blobKey(layer), refRecord{Size: 10, Refs: 7}.encode()); err != nil {
			return err
		}
		if err := txn.Delete(repoManifestKey("dev", "app", other)); err != nil {
			return err
		}
		return txn.Delete(blobKey(ghost))
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(rep.Problems, "\n")
	for _, want := range []string{
		"blob " + string(layer) + ": reference count 7, recount 1",
		"tag dev/app:2.0 points at " + string(other) + ", which the repository does not have",
		"link dev/app → " + string(ghost) + " has no blob record",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("fsck did not report %q; it found:\n%s", want, all)
		}
	}
	if rep, err = s.Check(ctx, CheckOptions{Repair: true}); err != nil || rep.Repaired == 0 {
		t.Fatalf("repair: %+v %v", rep, err)
	}
	rep, err = s.Check(ctx, CheckOptions{})
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("after repair: %v %v", rep.Problems, err)
	}
	if got, err := s.HeadManifest(ctx, "dev", "app", oci.Reference{Tag: "1.0"}); err != nil || got.Digest != d {
		t.Errorf("the healthy tag after repair: %v %v", got, err)
	}
}
