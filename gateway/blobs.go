package gateway

import (
	"io"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

func (g *Gateway) getBlob(r *request) error {
	ctx := r.ctx
	d := r.route.Digest
	etag := `"` + string(d) + `"`
	if ctx.IsHead() {
		size, err := r.reg.StatBlob(r.c, r.repo, d)
		if err != nil {
			return err
		}
		blobHeaders(ctx, d, etag)
		if size >= 0 {
			setContentLength(ctx, size)
		}
		ctx.Response.SkipBody = true
		return nil
	}
	body, size, err := r.reg.OpenBlob(r.c, r.repo, d)
	if err != nil {
		return err
	}
	if rd, ok := body.(cache.Redirect); ok {
		// The client fetches the bytes from the blob store (ranges included).
		ctx.Response.Header.Set("Docker-Content-Digest", string(d))
		// Set verbatim: a presigned URL must reach the client byte for byte.
		ctx.Response.Header.Set("Location", rd.URL)
		ctx.SetStatusCode(fasthttp.StatusTemporaryRedirect)
		return nil
	}
	blobHeaders(ctx, d, etag)
	if notModified(ctx, etag) {
		body.Close()
		return nil
	}
	seeker, seekable := body.(io.Seeker)
	if !seekable || size < 0 {
		// A blob still arriving from an upstream is sent whole, as it comes.
		ctx.SetBodyStream(body, int(size))
		return nil
	}
	start, length, partial, err := parseRange(string(ctx.Request.Header.Peek("Range")), size)
	if err != nil {
		body.Close()
		ctx.Response.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return err
	}
	if partial {
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			body.Close()
			return err
		}
		ctx.SetStatusCode(fasthttp.StatusPartialContent)
		ctx.Response.Header.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+
			strconv.FormatInt(start+length-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	// A reader that fetches over the network (S3) asks for exactly the range.
	if l, ok := body.(interface{ Limit(n int64) }); ok {
		l.Limit(length)
	}
	// fasthttp sends an *os.File body with sendfile and closes it when done.
	ctx.SetBodyStream(body, int(length))
	return nil
}

func blobHeaders(ctx *fasthttp.RequestCtx, d oci.Digest, etag string) {
	h := &ctx.Response.Header
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag)
	h.Set("Cache-Control", "max-age=31536000")
}

// notModified answers 304 when the client already holds the content.
func notModified(ctx *fasthttp.RequestCtx, etag string) bool {
	inm := string(ctx.Request.Header.Peek("If-None-Match"))
	if inm == "" {
		return false
	}
	for _, t := range strings.Split(inm, ",") {
		if t = strings.TrimSpace(t); t == etag || t == "*" {
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return true
		}
	}
	return false
}

// parseRange reads a single-range "bytes=" header. Headers it cannot use (several
// ranges, other units, bad syntax) are ignored and the whole blob is served, as RFC
// 9110 allows; a range that starts past the end is unsatisfiable.
func parseRange(h string, size int64) (start, length int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, false, nil
	}
	unsatisfiable := oci.ErrRangeNotSatisfiable.Withf("range %q is outside the blob's %d bytes", h, size)
	if first == "" { // suffix: the last N bytes
		n, ok := parseDigits(last)
		if !ok {
			return 0, size, false, nil
		}
		if n == 0 {
			return 0, 0, false, unsatisfiable
		}
		if size == 0 {
			// RFC 9110 calls it satisfiable, but no Content-Range can say "no bytes".
			return 0, 0, false, nil
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	s, ok := parseDigits(first)
	if !ok {
		return 0, size, false, nil
	}
	e := size - 1
	if last != "" {
		if e, ok = parseDigits(last); !ok {
			return 0, size, false, nil
		}
		if e < s { // a backwards range can never be satisfied
			return 0, 0, false, unsatisfiable
		}
		e = min(e, size-1)
	}
	if s >= size {
		return 0, 0, false, unsatisfiable
	}
	return s, e - s + 1, true, nil
}

// parseDigits reads a position of a range: decimal digits only (strconv alone takes a
// sign), within int64.
func parseDigits(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (g *Gateway) deleteBlob(r *request) error {
	if err := r.w.DeleteBlob(r.c, r.repo, r.route.Digest); err != nil {
		return err
	}
	r.ctx.SetStatusCode(fasthttp.StatusAccepted)
	return nil
}
