package gateway

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

func blobLocation(repo oci.Repository, d oci.Digest) string {
	return "/v2/" + string(repo) + "/blobs/" + string(d)
}

func uploadLocation(repo oci.Repository, id string) string {
	return "/v2/" + string(repo) + "/blobs/uploads/" + id
}

// startUpload answers POST /blobs/uploads/: a cross-repository mount, a monolithic
// push with ?digest=, or the start of an upload session.
func (g *Gateway) startUpload(r *request) error {
	ctx := r.ctx
	args := ctx.QueryArgs()
	if mount := args.Peek("mount"); len(mount) > 0 {
		if done, err := g.tryMount(r, string(mount), string(args.Peek("from"))); done || err != nil {
			return err
		}
	}
	if dg := args.Peek("digest"); len(dg) > 0 {
		d, err := oci.ParseDigest(string(dg))
		if err != nil {
			return err
		}
		if _, err := r.w.PutBlob(g.clientContext(r), r.repo, d, g.uploadBody(ctx), bodyLength(ctx)); err != nil {
			return err
		}
		return created(ctx, blobLocation(r.route.Repo, d), d)
	}
	alg := oci.SHA256
	if a := args.Peek("digest-algorithm"); len(a) > 0 {
		var err error
		if alg, err = oci.ParseAlgorithm(string(a)); err != nil {
			return oci.ErrDigestInvalid.Withf("digest-algorithm %q is not supported (sha256, sha512)", a)
		}
	}
	u, err := r.w.StartUpload(g.clientContext(r), r.repo, alg)
	if err != nil {
		return err
	}
	// A body on the POST is the first chunk.
	if hasBody(ctx) {
		if u, err = r.w.AppendUpload(r.c, r.repo, u.ID, 0, g.uploadBody(ctx), bodyLength(ctx)); err != nil {
			return err
		}
	}
	g.uploadAccepted(r, u, fasthttp.StatusAccepted)
	return nil
}

// tryMount links an existing blob into the repository. done is false when the blob
// cannot be mounted (unknown, or from another registry) and an upload should start.
func (g *Gateway) tryMount(r *request, mount, fromName string) (done bool, err error) {
	d, err := oci.ParseDigest(mount)
	if err != nil {
		return false, err
	}
	var from oci.Repository
	if fromName == "" && g.live(r.ctx).Auth != nil {
		// With access control, a mount without a source reads from a repository the
		// caller may pull: find one holding the blob, or upload.
		loc, ok := r.reg.(vhost.BlobLocator)
		if !ok {
			return false, nil
		}
		repos, err := loc.BlobRepositories(r.c, d)
		if err != nil {
			return false, err
		}
		for _, repo := range repos {
			if g.live(r.ctx).Auth.Decide(r.who.identity(), r.reg.Name(), string(repo), auth.Pull) {
				from = repo
				break
			}
		}
		if from == "" {
			return false, nil
		}
	}
	if fromName != "" {
		client, err := oci.ParseRepository(fromName)
		if err != nil {
			return false, err
		}
		// from is a name as the client sees it: resolve it like the target.
		src, err := g.live(r.ctx).Router.Resolve(string(r.ctx.Host()), client, "")
		if err != nil || src.Registry != r.reg {
			return false, nil
		}
		// Mounting reads the source: without pull on it, upload instead. A token that
		// lacks a scope its subject has is answered with a challenge for it.
		if g.live(r.ctx).Auth != nil && !g.may(r.ctx, r.who, string(client), src.Registry, string(src.Repo), auth.Pull) {
			if r.who.claims != nil && g.live(r.ctx).Auth.Decide(r.who.identity(), src.Registry.Name(), string(src.Repo), auth.Pull) {
				scope := "repository:" + string(r.route.Repo) + ":pull,push repository:" + string(client) + ":pull"
				return false, g.challenge(r.ctx, scope, "insufficient_scope", "the token does not cover pulling "+string(client)+" for the mount")
			}
			return false, nil
		}
		from = src.Repo
	}
	_, ok, err := r.w.MountBlob(r.c, r.repo, from, d)
	if !ok || err != nil {
		return false, err
	}
	return true, created(r.ctx, blobLocation(r.route.Repo, d), d)
}

// clientContext tells the store who is uploading: the user, or for anonymous clients
// their address (an IPv6 /64), each with a limit of open uploads.
func (g *Gateway) clientContext(r *request) context.Context {
	if id := r.who.identity(); !id.Anonymous() {
		return cache.WithClient(r.c, "user "+id.Name)
	}
	return cache.WithClient(r.c, "address "+g.clientKey(r.ctx))
}

func created(ctx *fasthttp.RequestCtx, location string, d oci.Digest) error {
	ctx.SetStatusCode(fasthttp.StatusCreated)
	ctx.Response.Header.Set("Location", location)
	ctx.Response.Header.Set("Docker-Content-Digest", string(d))
	setContentLength(ctx, 0)
	return nil
}

// uploadAccepted describes an open upload: where to send the next chunk and what the
// registry holds so far.
func (g *Gateway) uploadAccepted(r *request, u *cache.Upload, status int) {
	h := &r.ctx.Response.Header
	r.ctx.SetStatusCode(status)
	h.Set("Location", uploadLocation(r.route.Repo, u.ID))
	h.Set("Docker-Upload-UUID", u.ID)
	h.Set("Range", "0-"+strconv.FormatInt(max(u.Offset-1, 0), 10))
	setContentLength(r.ctx, 0)
}

func (g *Gateway) uploadStatus(r *request) error {
	u, err := r.w.GetUpload(r.c, r.repo, r.route.UploadID)
	if err != nil {
		return err
	}
	g.uploadAccepted(r, u, fasthttp.StatusNoContent)
	return nil
}

func (g *Gateway) patchUpload(r *request) error {
	start, err := chunkStart(r.ctx)
	if err != nil {
		return err
	}
	u, err := r.w.AppendUpload(r.c, r.repo, r.route.UploadID, start, g.uploadBody(r.ctx), bodyLength(r.ctx))
	if err != nil {
		return err
	}
	g.uploadAccepted(r, u, fasthttp.StatusAccepted)
	return nil
}

func (g *Gateway) finishUpload(r *request) error {
	ctx := r.ctx
	dg := ctx.QueryArgs().Peek("digest")
	if len(dg) == 0 {
		return oci.ErrDigestInvalid.Withf("the closing PUT needs a digest query parameter")
	}
	d, err := oci.ParseDigest(string(dg))
	if err != nil {
		return err
	}
	start, err := chunkStart(ctx)
	if err != nil {
		return err
	}
	var body io.Reader
	if hasBody(ctx) {
		body = g.uploadBody(ctx)
	}
	if _, err := r.w.FinishUpload(r.c, r.repo, r.route.UploadID, d, start, body, bodyLength(ctx)); err != nil {
		return err
	}
	return created(ctx, blobLocation(r.route.Repo, d), d)
}

func (g *Gateway) cancelUpload(r *request) error {
	if err := r.w.CancelUpload(r.c, r.repo, r.route.UploadID); err != nil {
		return err
	}
	r.ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

// chunkStart reads Content-Range ("<start>-<end>", optionally with a "bytes" unit) and
// checks it against Content-Length. It returns -1 when the header is absent.
func chunkStart(ctx *fasthttp.RequestCtx) (int64, error) {
	return parseContentRange(string(ctx.Request.Header.Peek("Content-Range")), bodyLength(ctx))
}

// parseContentRange reads a chunk's Content-Range against its body length n (-1:
// chunked, unknown).
func parseContentRange(h string, n int64) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return -1, nil
	}
	spec := h
	if rest, ok := strings.CutPrefix(h, "bytes"); ok && rest != "" && (rest[0] == '=' || rest[0] == ' ') {
		spec = strings.TrimSpace(rest[1:])
	}
	spec, total, hasTotal := strings.Cut(spec, "/")
	if _, ok := parseDigits(total); hasTotal && !ok && total != "*" {
		return 0, oci.ErrRangeInvalid.Withf("invalid Content-Range %q", h)
	}
	first, last, _ := strings.Cut(spec, "-")
	start, ok1 := parseDigits(first)
	end, ok2 := parseDigits(last)
	if !ok1 || !ok2 || end < start {
		return 0, oci.ErrRangeInvalid.Withf("invalid Content-Range %q", h)
	}
	if n >= 0 && n != end-start+1 {
		return 0, oci.ErrRangeInvalid.Withf("Content-Range %q covers %d bytes, the body has %d", h, end-start+1, n)
	}
	return start, nil
}

// bodyLength is the request's Content-Length, or -1 for a chunked body.
func bodyLength(ctx *fasthttp.RequestCtx) int64 {
	switch n := ctx.Request.Header.ContentLength(); {
	case n >= 0:
		return int64(n)
	case n == -1:
		return -1
	default:
		return 0
	}
}

func hasBody(ctx *fasthttp.RequestCtx) bool {
	n := ctx.Request.Header.ContentLength()
	return n > 0 || n == -1
}
