package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	cases := []struct {
		path string
		want Route
		err  *oci.Code
	}{
		{"/v2/", Route{Kind: KindBase}, nil},
		{"/v2", Route{Kind: KindBase}, nil},
		{"/v2/_catalog", Route{Kind: KindCatalog}, nil},
		{"/v2/a/tags/list", Route{Kind: KindTags, Repo: "a"}, nil},
		{"/v2/a/b/c/manifests/latest", Route{Kind: KindManifest, Repo: "a/b/c", Reference: oci.Reference{Tag: "latest"}}, nil},
		{"/v2/a/manifests/" + d, Route{Kind: KindManifest, Repo: "a", Reference: oci.Reference{Digest: oci.Digest(d)}}, nil},
		{"/v2/a/manifests/sha256%3A" + strings.Repeat("a", 64), Route{Kind: KindManifest, Repo: "a", Reference: oci.Reference{Digest: oci.Digest(d)}}, nil},
		// components named like endpoints are part of the name
		{"/v2/manifests/blobs/tags/manifests/v1", Route{Kind: KindManifest, Repo: "manifests/blobs/tags", Reference: oci.Reference{Tag: "v1"}}, nil},
		{"/v2/blobs/uploads/blobs/uploads/", Route{Kind: KindUploads, Repo: "blobs/uploads"}, nil},
		{"/v2/a/blobs/" + d, Route{Kind: KindBlob, Repo: "a", Digest: oci.Digest(d)}, nil},
		{"/v2/a/blobs/uploads/", Route{Kind: KindUploads, Repo: "a"}, nil},
		{"/v2/a/blobs/uploads", Route{Kind: KindUploads, Repo: "a"}, nil},
		{"/v2/a/blobs/uploads/abc-123", Route{Kind: KindUpload, Repo: "a", UploadID: "abc-123"}, nil},
		{"/v2/a/referrers/" + d, Route{Kind: KindReferrers, Repo: "a", Digest: oci.Digest(d)}, nil},
		{"/v2/a/../b/tags/list", Route{}, oci.ErrNameInvalid},
		{"/v2/A/tags/list", Route{}, oci.ErrNameInvalid},
		{"/v2/a/blobs/sha256:zz", Route{}, oci.ErrDigestInvalid},
		{"/v2/a/blobs/uploads/a.b", Route{}, oci.ErrBlobUploadUnknown},
		{"/v2/a/unknown/x", Route{}, oci.ErrNotFound},
		{"/v2x/", Route{}, oci.ErrNotFound},
		{"/", Route{}, oci.ErrNotFound},
		{"/v2/tags/list", Route{}, oci.ErrNotFound},
	}
	for _, c := range cases {
		got, err := ParseRoute(c.path)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: error %v, want %s", c.path, err, c.err.Name)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.path, got, err, c.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		h                  string
		start, length      int64
		partial, unsatisfy bool
	}{
		{"", 0, 100, false, false},
		{"bytes=0-9", 0, 10, true, false},
		{"bytes=90-", 90, 10, true, false},
		{"bytes=90-1000", 90, 10, true, false},
		{"bytes=-10", 90, 10, true, false},
		{"bytes=-1000", 0, 100, true, false},
		{"bytes=100-", 0, 0, false, true},
		{"bytes=50-10", 0, 0, false, true},
		{"bytes=0-1,5-6", 0, 100, false, false}, // several ranges: whole blob
		{"items=0-1", 0, 100, false, false},
		{"bytes=x-y", 0, 100, false, false},
	}
	for _, c := range cases {
		start, length, partial, err := parseRange(c.h, 100)
		if (err != nil) != c.unsatisfy {
			t.Errorf("%q: err %v", c.h, err)
			continue
		}
		if err == nil && (start != c.start || length != c.length || partial != c.partial) {
			t.Errorf("%q: got %d+%d partial=%v, want %d+%d partial=%v", c.h, start, length, partial, c.start, c.length, c.partial)
		}
	}
}
