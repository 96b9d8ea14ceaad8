package gateway

import (
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// The distribution spec's grammar for what a route carries.
var (
	specName     = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	specTag      = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	specDigest   = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
	uploadIDForm = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
)

// routePath prints a route as a client would ask for it.
func routePath(r Route) string {
	base := "/v2/" + string(r.Repo)
	switch r.Kind {
	case KindBase:
		return "/v2/"
	case KindCatalog:
		return "/v2/_catalog"
	case KindTags:
		return base + "/tags/list"
	case KindManifest:
		return base + "/manifests/" + r.Reference.String()
	case KindBlob:
		return base + "/blobs/" + string(r.Digest)
	case KindUploads:
		return base + "/blobs/uploads/"
	case KindUpload:
		return base + "/blobs/uploads/" + r.UploadID
	case KindReferrers:
		return base + "/referrers/" + string(r.Digest)
	}
	return ""
}

// Every route the parser accepts names a repository of the spec's grammar (so never
// "..", an empty component, NUL or an upper-case letter), a tag or digest of the
// spec's grammar, an upload id of the server's own form, and only the parts its kind
// has; printed back (plainly, or with every byte of the name and reference
// percent-encoded) it parses to the same route. What is refused is refused with a 4xx
// registry error.
func FuzzParseRoute(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, p := range []string{"/v2/", "/v2", "/v2/_catalog", "/v2/a/tags/list", "/v2/a/b/c/manifests/latest",
		"/v2/a/manifests/" + d, "/v2/a/manifests/sha256%3A" + strings.Repeat("a", 64), "/v2/manifests/blobs/tags/manifests/v1",
		"/v2/blobs/uploads/blobs/uploads/", "/v2/a/blobs/" + d, "/v2/a/blobs/uploads", "/v2/a/blobs/uploads/abc-123",
		"/v2/a/referrers/" + d, "/v2/a/../b/tags/list", "/v2/a%2F..%2Fb/tags/list", "/v2/a%00/tags/list", "/v2/A/tags/list",
		"/v2/a/blobs/uploads/a.b", "/v2/a/blobs/uploads/..%2F..%2Fx", "/v2//a/tags/list", "/v2/a/unknown/x", "/v2x/", "/%zz"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r, err := ParseRoute(path)
		if err != nil {
			e, ok := oci.AsError(err)
			if !ok || e.Code.Status < 400 || e.Code.Status >= 500 {
				t.Fatalf("ParseRoute(%q): error %v, want a 4xx registry error", path, err)
			}
			return
		}
		hasRepo := r.Kind != KindBase && r.Kind != KindCatalog
		if hasRepo != (r.Repo != "") {
			t.Fatalf("ParseRoute(%q) = %+v: repository", path, r)
		}
		if hasRepo && (!specName.MatchString(string(r.Repo)) || len(r.Repo) > oci.MaxNameLength || strings.Contains(string(r.Repo), "..")) {
			t.Fatalf("ParseRoute(%q): repository %q is outside the spec's grammar", path, r.Repo)
		}
		switch {
		case (r.Kind == KindManifest) != (r.Reference != oci.Reference{}):
			t.Fatalf("ParseRoute(%q) = %+v: reference", path, r)
		case (r.Kind == KindBlob || r.Kind == KindReferrers) != (r.Digest != ""):
			t.Fatalf("ParseRoute(%q) = %+v: digest", path, r)
		case (r.Kind == KindUpload) != (r.UploadID != ""):
			t.Fatalf("ParseRoute(%q) = %+v: upload id", path, r)
		}
		if r.Kind == KindManifest {
			if ref := r.Reference; ref.IsDigest() == (ref.Tag != "") || ref.IsDigest() && !specDigest.MatchString(string(ref.Digest)) ||
				!ref.IsDigest() && !specTag.MatchString(string(ref.Tag)) {
				t.Fatalf("ParseRoute(%q): reference %+v is outside the spec's grammar", path, ref)
			}
		}
		if r.Digest != "" && !specDigest.MatchString(string(r.Digest)) {
			t.Fatalf("ParseRoute(%q): digest %q", path, r.Digest)
		}
		if r.UploadID != "" && !uploadIDForm.MatchString(r.UploadID) {
			t.Fatalf("ParseRoute(%q): upload id %q", path, r.UploadID)
		}
		printed := routePath(r)
		if back, err := ParseRoute(printed); err != nil || back != r {
			t.Fatalf("ParseRoute(%q) = %+v; printed as %q it reads %+v, %v", path, r, printed, back, err)
		}
		if hasRepo {
			escaped := "/v2/" + escapeAll(string(r.Repo)) + strings.TrimPrefix(printed, "/v2/"+string(r.Repo))
			if r.Kind == KindManifest {
				escaped = strings.TrimSuffix(escaped, r.Reference.String()) + escapeAll(r.Reference.String())
			}
			if back, err := ParseRoute(escaped); err != nil || back != r {
				t.Fatalf("ParseRoute(%q) = %+v; percent-encoded as %q it reads %+v, %v", path, r, escaped, back, err)
			}
		}
	})
}

// escapeAll percent-encodes every byte of s.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:]))
	}
	return b.String()
}

// rfcRange is RFC 9110's single byte-range-spec (after the "bytes=" unit and
// surrounding whitespace): first-pos "-" [ last-pos ], or "-" suffix-length.
var rfcRange = regexp.MustCompile(`^(?:([0-9]+)-([0-9]*)|-([0-9]+))$`)

// A Range header makes a partial answer only when it is RFC 9110's single byte range,
// and then exactly the bytes it asks for: at least one, all inside the blob, from the
// first position asked (or the last N bytes). Printed as the Content-Range of the
// answer and asked again, the same range comes back. Anything else is the whole blob
// or 416 RANGE_NOT_SATISFIABLE.
func FuzzParseRange(f *testing.F) {
	// Regressions: "bytes=+5-" and "bytes=-+5" were partial (strconv takes a sign), and
	// a suffix of an empty blob answered 206 "bytes 0--1/0".
	for _, h := range []string{"", "bytes=0-9", "bytes=90-", "bytes=90-1000", "bytes=-10", "bytes=-1000", "bytes=100-", "bytes=50-10",
		"bytes=0-1,5-6", "items=0-1", "bytes=x-y", "bytes=-0", " bytes= 5-6 ", "bytes=+5-", "bytes=-+5", "bytes=99999999999999999999-"} {
		f.Add(h, int64(100))
	}
	f.Add("bytes=-1", int64(0))
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return // sizes come from the blob store
		}
		start, length, partial, err := parseRange(h, size)
		if err != nil {
			if !errors.Is(err, oci.ErrRangeNotSatisfiable) {
				t.Fatalf("parseRange(%q, %d): error %v", h, size, err)
			}
		} else if !partial && (start != 0 || length != size) {
			t.Fatalf("parseRange(%q, %d) = %d+%d, not partial: want the whole blob", h, size, start, length)
		}
		spec, isBytes := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
		m := rfcRange.FindStringSubmatch(strings.TrimSpace(spec))
		if !isBytes || m == nil {
			if partial || err != nil {
				t.Fatalf("parseRange(%q, %d) = %d+%d partial=%v err=%v; it is no single byte range, so the whole blob", h, size, start, length, partial, err)
			}
			return
		}
		if err != nil {
			first, _ := strconv.ParseInt(m[1], 10, 64)
			last, lerr := strconv.ParseInt(m[2], 10, 64)
			if m[3] == "" && first < size && (m[2] == "" || lerr != nil || last >= first) || m[3] != "" && strings.Trim(m[3], "0") != "" {
				t.Fatalf("parseRange(%q, %d): %v, but the range is satisfiable", h, size, err)
			}
		}
		if !partial {
			return // unsatisfiable, or numbers past int64 (the whole blob)
		}
		if start < 0 || length < 1 || start > size-length {
			t.Fatalf("parseRange(%q, %d) = %d+%d: outside the blob", h, size, start, length)
		}
		if m[3] != "" {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			if start != size-min(n, size) {
				t.Fatalf("parseRange(%q, %d) = %d+%d: not the last %d bytes", h, size, start, length, n)
			}
		} else if first, _ := strconv.ParseInt(m[1], 10, 64); start != first {
			t.Fatalf("parseRange(%q, %d) = %d+%d: does not start at %d", h, size, start, length, first)
		}
		contentRange := strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(start+length-1, 10)
		s2, l2, p2, err := parseRange("bytes="+contentRange, size)
		if err != nil || !p2 || s2 != start || l2 != length {
			t.Fatalf("parseRange(%q, %d) = %d+%d; answered as bytes %s/%d, which asked again is %d+%d %v %v", h, size, start, length, contentRange, size, s2, l2, p2, err)
		}
	})
}

// contentRangeForm is what a chunk's Content-Range may be: "<start>-<end>", with an
// optional "bytes" unit and complete length.
var contentRangeForm = regexp.MustCompile(`^(?:bytes[ =]\s*)?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?$`)

// A chunk's Content-Range is accepted only in its documented form, with a start no
// greater than its end and covering exactly the body's length when that is known; the
// start returned is the one written, and printing the range back reads the same.
func FuzzParseContentRange(f *testing.F) {
	// Regressions: "+0-+9", "0-9/x" and "bytes0-9" were accepted.
	for _, h := range []string{"0-9", "bytes=0-9", "bytes 0-9/100", "bytes 0-9/*", "10-19", "5-4", "-1-3", "+0-+9", "0-9/x", "bytes0-9", "0-", "", " "} {
		f.Add(h, int64(10))
	}
	f.Add("0-9223372036854775807", int64(-1))
	f.Fuzz(func(t *testing.T, h string, n int64) {
		if n < -1 {
			return // -1 is a chunked body, others are Content-Length
		}
		start, err := parseContentRange(h, n)
		if strings.TrimSpace(h) == "" {
			if start != -1 || err != nil {
				t.Fatalf("no Content-Range: %d, %v", start, err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, oci.ErrRangeInvalid) {
				t.Fatalf("parseContentRange(%q, %d): error %v", h, n, err)
			}
			return
		}
		m := contentRangeForm.FindStringSubmatch(strings.TrimSpace(h))
		if m == nil {
			t.Fatalf("parseContentRange(%q, %d) accepted a range outside its form", h, n)
		}
		first, _ := strconv.ParseInt(m[1], 10, 64)
		last, _ := strconv.ParseInt(m[2], 10, 64)
		if start != first || last < first || n >= 0 && last-first+1 != n {
			t.Fatalf("parseContentRange(%q, %d) = %d", h, n, start)
		}
		if back, err := parseContentRange(strconv.FormatInt(first, 10)+"-"+strconv.FormatInt(last, 10), n); err != nil || back != start {
			t.Fatalf("parseContentRange(%q, %d) = %d; printed back it reads %d, %v", h, n, start, back, err)
		}
	})
}

// The path escaping the fuzzers rely on is the one url.PathUnescape undoes.
func TestEscapeAllRoundTrips(t *testing.T) {
	s := "a/b:\x00é"
	if got, err := url.PathUnescape(escapeAll(s)); err != nil || got != s {
		t.Fatalf("%q → %q → %q, %v", s, escapeAll(s), got, err)
	}
}
