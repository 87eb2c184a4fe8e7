package controlclient

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Error is a refusal by the coordinator. Permanent errors (bad token, name
// taken, version mismatch) must not be retried.
type Error struct {
	Status int
	Resp   wire.ErrorResponse
	// RetryAfter is the coordinator's Retry-After (429 rate_limited, 503),
	// at most MaxRetryAfter; 0 when absent.
	RetryAfter time.Duration
}

// MaxRetryAfter caps a Retry-After the client honours, so a confused or
// hostile server cannot park a node for hours.
const MaxRetryAfter = 5 * time.Minute

func (e *Error) Error() string {
	return fmt.Sprintf("coordinator refused (%d %s): %s", e.Status, e.Resp.Code, e.Resp.Error)
}

// Unwrap lets callers test errors.Is(err, wire.ErrVersion).
func (e *Error) Unwrap() error {
	if e.Resp.Code == wire.CodeVersion {
		return wire.ErrVersion
	}
	return nil
}

// Permanent reports whether retrying cannot help.
func (e *Error) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}

// IsPermanent reports whether err is a refusal that retrying cannot help: a
// permanent *Error, a certificate that does not match the pin, or a
// protocol version mismatch.
func IsPermanent(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && ce.Permanent() || errors.Is(err, wire.ErrPinMismatch) || errors.Is(err, wire.ErrVersion)
}
