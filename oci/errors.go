package oci

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is one registry error code, declared once with its HTTP status and default
// message. Handlers return errors built from codes and never write a status by hand.
type Code struct {
	Name    string
	Status  int
	Message string
}

// The error table. The names and messages are the distribution spec's; the statuses
// are the ones clients expect for each code.
var (
	ErrBlobUnknown         = &Code{"BLOB_UNKNOWN", http.StatusNotFound, "blob unknown to registry"}
	ErrRangeInvalid        = &Code{"BLOB_UPLOAD_INVALID", http.StatusRequestedRangeNotSatisfiable, "requested range not satisfiable"}
	ErrBlobUploadUnknown   = &Code{"BLOB_UPLOAD_UNKNOWN", http.StatusNotFound, "blob upload unknown to registry"}
	ErrDigestInvalid       = &Code{"DIGEST_INVALID", http.StatusBadRequest, "provided digest did not match uploaded content"}
	ErrManifestBlobUnknown = &Code{"MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"}
	ErrManifestInvalid     = &Code{"MANIFEST_INVALID", http.StatusBadRequest, "manifest invalid"}
	ErrManifestTooLarge    = &Code{"MANIFEST_INVALID", http.StatusRequestEntityTooLarge, "manifest too large"}
	ErrBodyTooLarge        = &Code{"SIZE_INVALID", http.StatusRequestEntityTooLarge, "request body too large"}
	ErrManifestUnknown     = &Code{"MANIFEST_UNKNOWN", http.StatusNotFound, "manifest unknown to registry"}
	ErrNameInvalid         = &Code{"NAME_INVALID", http.StatusBadRequest, "invalid repository name"}
	ErrNameUnknown         = &Code{"NAME_UNKNOWN", http.StatusNotFound, "repository name not known to registry"}
	ErrSizeInvalid         = &Code{"SIZE_INVALID", http.StatusBadRequest, "provided length did not match content length"}
	ErrUnauthorized        = &Code{"UNAUTHORIZED", http.StatusUnauthorized, "authentication required"}
	ErrDenied              = &Code{"DENIED", http.StatusForbidden, "requested access to the resource is denied"}
	ErrUnsupported         = &Code{"UNSUPPORTED", http.StatusMethodNotAllowed, "the operation is unsupported"}
	ErrTooManyRequests     = &Code{"TOOMANYREQUESTS", http.StatusTooManyRequests, "too many requests"}
	ErrNotFound            = &Code{"NOT_FOUND", http.StatusNotFound, "no such endpoint"}
	ErrUnknown             = &Code{"UNKNOWN", http.StatusInternalServerError, "unknown error"}
)

// Error is a registry error: a code and a message for the client.
type Error struct {
	Code    *Code
	Message string
	Detail  any
	// RetryAfter is sent as the Retry-After header (429, 503).
	RetryAfter string
}

func (e *Error) Error() string { return e.Code.Name + ": " + e.Message }

// Is lets errors.Is match an *Error against its *Code.
func (e *Error) Is(target error) bool {
	c, ok := target.(*Code)
	return ok && c == e.Code
}

// Error makes a bare code usable as an error with its default message.
func (c *Code) Error() string { return c.Name + ": " + c.Message }

// Withf returns an error of this code with a specific message.
func (c *Code) Withf(format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// WithDetail returns an error of this code with the default message and a detail.
func (c *Code) WithDetail(detail any) *Error {
	return &Error{Code: c, Message: c.Message, Detail: detail}
}

// AsError finds the registry error in err's chain. ok is false for internal errors,
// which must be logged and answered as UNKNOWN.
func AsError(err error) (e *Error, ok bool) {
	if errors.As(err, &e) {
		return e, true
	}
	var c *Code
	if errors.As(err, &c) {
		return &Error{Code: c, Message: c.Message}, true
	}
	return nil, false
}

// ErrRangeNotSatisfiable answers a blob GET whose Range lies outside the blob. The spec
// has no code for it; the status is what clients act on.
var ErrRangeNotSatisfiable = &Code{"BLOB_UNKNOWN", http.StatusRequestedRangeNotSatisfiable, "requested range not satisfiable"}

// ErrPaginationInvalid answers a listing with a malformed n or last.
var ErrPaginationInvalid = &Code{"UNSUPPORTED", http.StatusBadRequest, "invalid pagination parameters"}

// ErrStorageFull answers writes the registry has no room for. The spec has no code for
// it; 507 is what the condition is.
var ErrStorageFull = &Code{"UNKNOWN", http.StatusInsufficientStorage, "storage full"}

// ErrUpstreamUnavailable answers a request a proxy could not serve: the upstream is
// unreachable or failing and nothing suitable is cached.
var ErrUpstreamUnavailable = &Code{"UNKNOWN", http.StatusBadGateway, "upstream registry unavailable"}

// ErrUpstreamRetryLater is ErrUpstreamUnavailable when the upstream said when to come
// back (a 503 with Retry-After): the client gets the same status and Retry-After.
var ErrUpstreamRetryLater = &Code{"UNKNOWN", http.StatusServiceUnavailable, "upstream registry unavailable"}

// ErrStorageUnavailable answers a request the blob storage (an S3 bucket) could not
// serve after its retries: it is unreachable or failing. Nothing is committed.
var ErrStorageUnavailable = &Code{"UNKNOWN", http.StatusServiceUnavailable, "blob storage unavailable"}

// ErrIndexUnavailable answers a request the index (its PostgreSQL database) could not
// serve in time: the database is down, unreachable, restarting or out of connections.
// Nothing is committed; the request can be tried again.
var ErrIndexUnavailable = &Code{"UNKNOWN", http.StatusServiceUnavailable, "index unavailable"}

// ErrQueryInvalid answers a request with a malformed query parameter (a search filter).
var ErrQueryInvalid = &Code{"UNSUPPORTED", http.StatusBadRequest, "invalid query parameters"}

// ErrConfigInvalid answers a configuration reload whose file is invalid: nothing
// changed.
var ErrConfigInvalid = &Code{"UNSUPPORTED", http.StatusUnprocessableEntity, "configuration invalid"}

// ErrSearchTimeout answers a search that ran out of its time budget.
var ErrSearchTimeout = &Code{"UNKNOWN", http.StatusServiceUnavailable, "search took too long"}

// Answers to what a connection sends before any handler runs, and to connections
// over the server's limits: request headers over http.max_header_size, a request or
// body that does not arrive in time, a request that is not HTTP, and a connection
// beyond http.max_conns (one beyond http.max_conns_per_ip is TOOMANYREQUESTS).
var (
	ErrHeadersTooLarge  = &Code{"SIZE_INVALID", http.StatusRequestHeaderFieldsTooLarge, "request headers too large"}
	ErrRequestTimeout   = &Code{"UNKNOWN", http.StatusRequestTimeout, "request timed out"}
	ErrMalformedRequest = &Code{"UNSUPPORTED", http.StatusBadRequest, "malformed HTTP request"}
	ErrTooManyConns     = &Code{"UNKNOWN", http.StatusServiceUnavailable, "too many connections"}
)
